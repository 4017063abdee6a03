//! Kafka's errors, mapped to the store's once.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use switchboard_store::Error;

/// The error code inside a Kafka error, if it carries one.
pub(crate) fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

/// True when the error says the topic (or its partition) does not exist.
pub(crate) fn is_unknown_topic(e: &KafkaError) -> bool {
    matches!(
        code(e),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// Maps a Kafka error met while working on `stream`.
pub(crate) fn map(e: &KafkaError, stream: &str) -> Error {
    if is_unknown_topic(e) {
        return Error::NotFound(stream.to_string());
    }
    match code(e) {
        Some(RDKafkaErrorCode::QueueFull) => {
            Error::Backpressure(format!("kafka producer queue is full: {e}"))
        }
        Some(
            RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut,
        ) => Error::Timeout(format!("kafka: {e}")),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord) => {
            Error::Invalid(format!("kafka refused the records: {e}"))
        }
        _ => Error::Unavailable(format!("kafka: {e}")),
    }
}

/// Runs a blocking Kafka call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("kafka call failed: {e}")))?
}
