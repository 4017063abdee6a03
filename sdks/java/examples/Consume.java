// Consumes a stream from a saved cursor (or the beginning), saving the cursor after each batch, so that a restart
// resumes where it stopped.
//   mvn -q compile && java -cp target/classes examples/Consume.java http://127.0.0.1:7700 "$(cat data/admin.token)"
import dev.switchboard.Batch;
import dev.switchboard.Gap;
import dev.switchboard.ReadEvent;
import dev.switchboard.Reader;
import dev.switchboard.SwitchboardClient;
import java.nio.file.Files;
import java.nio.file.Path;

public class Consume {
  public static void main(String[] args) throws Exception {
    Path saved = Path.of("orders.cursor");
    String start = Files.exists(saved) ? Files.readString(saved) : "earliest";
    try (SwitchboardClient client = SwitchboardClient.builder(args[0]).token(args[1]).build();
        Reader reader = Reader.open(client, "orders", start, Reader.Options.defaults().withWaitMs(2000))) {
      int seen = 0;
      while (seen < 100) {
        Batch batch = reader.next();
        for (Gap g : batch.gaps()) {
          System.err.printf("retention removed offsets %d..%d of partition %d%n", g.from(), g.to() - 1, g.partition());
        }
        for (ReadEvent e : batch.events()) System.out.println(e.partition() + " " + e.offset() + " " + e.key() + " " + e.value());
        seen += batch.events().size();
        Files.writeString(saved, reader.ack());
      }
    }
  }
}
