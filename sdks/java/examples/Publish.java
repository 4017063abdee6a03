// Publishes a few blocks through a writer with a producer id, so that a rerun after a crash stores nothing twice.
//   mvn -q compile && java -cp target/classes examples/Publish.java http://127.0.0.1:7700 "$(cat data/admin.token)"
import dev.switchboard.Event;
import dev.switchboard.SwitchboardClient;
import dev.switchboard.Writer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

public class Publish {
  public static void main(String[] args) {
    try (SwitchboardClient client = SwitchboardClient.builder(args[0]).token(args[1]).build()) {
      client.createStream("orders", SwitchboardClient.StreamSettings.partitions(4));
      try (Writer writer = Writer.open(client, "orders", Writer.Options.defaults().withProducer("orders-example"))) {
        for (int i = 0; i < 10; i++) {
          List<Event> block = new ArrayList<>();
          for (int j = 0; j < 10; j++) block.add(Event.of(Map.of("order", i * 10 + j)).withKey("customer-" + j));
          System.out.println("sent block " + writer.send(block));
        }
        System.out.println("durable through block " + writer.flush());
      }
    }
  }
}
