package dev.contextd.client;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A real contextd process for tests: the binary named by {@code CONTEXTD_BIN}, else
 * {@code <repo>/target/debug/contextd}, listening on a free loopback port.
 */
public final class TestServer implements AutoCloseable {
  private static final String LISTENING = "contextd listening on ";
  private static List<String> storeFlag;

  private final Process process;
  private final String address;
  private final Thread killer;

  private TestServer(Process process, String address, Thread killer) {
    this.process = process;
    this.address = address;
    this.killer = killer;
  }

  /** host:port the server listens on. */
  public String address() {
    return address;
  }

  /** The repository holding this module: the nearest parent with Cargo.toml and proto/. */
  public static Path repoRoot() {
    Path dir = Path.of(System.getProperty("user.dir")).toAbsolutePath();
    for (Path p = dir; p != null; p = p.getParent()) {
      if (Files.isRegularFile(p.resolve("Cargo.toml")) && Files.isDirectory(p.resolve("proto"))) {
        return p;
      }
    }
    throw new IllegalStateException("not inside the contextd repository (no parent of " + dir + " has Cargo.toml and proto/); set CONTEXTD_BIN");
  }

  static Path binary() {
    String env = System.getenv("CONTEXTD_BIN");
    if (env != null && !env.isEmpty()) {
      return Path.of(env);
    }
    Path bin = repoRoot().resolve("target/debug/contextd");
    if (!Files.isExecutable(bin)) {
      throw new IllegalStateException("no contextd binary at " + bin + ": build it with `cargo build` or set CONTEXTD_BIN");
    }
    return bin;
  }

  /**
   * {@code --store memory} on builds that have a choice of store, so tests leave no files
   * behind; nothing on builds that only keep sessions in memory.
   */
  private static synchronized List<String> storeFlag(Path bin) throws IOException, InterruptedException {
    if (storeFlag == null) {
      Process help = new ProcessBuilder(bin.toString(), "serve", "--help").redirectErrorStream(true).start();
      String text = new String(help.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      help.waitFor();
      storeFlag = text.contains("--store") ? List.of("--store", "memory") : List.of();
    }
    return storeFlag;
  }

  /** Starts contextd and waits for its listening line. */
  public static TestServer start() throws IOException, InterruptedException {
    return start(List.of());
  }

  /** Starts contextd with extra {@code serve} arguments (such as {@code --tls-cert} or {@code --auth keys}). */
  public static TestServer start(List<String> extraArgs) throws IOException, InterruptedException {
    Path bin = binary();
    List<String> cmd = new ArrayList<>(List.of(bin.toString(), "serve", "--listen", "127.0.0.1:0"));
    cmd.addAll(storeFlag(bin));
    cmd.addAll(extraArgs);
    Process process = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
    // Should the test JVM exit without closing this, the server goes with it.
    Thread killer = new Thread(process::destroyForcibly);
    Runtime.getRuntime().addShutdownHook(killer);
    CompletableFuture<String> address = new CompletableFuture<>();
    Thread reader = new Thread(() -> readStdout(process.getInputStream(), address), "contextd-stdout");
    reader.setDaemon(true);
    reader.start();
    try {
      return new TestServer(process, address.get(60, TimeUnit.SECONDS), killer);
    } catch (ExecutionException | TimeoutException e) {
      process.destroyForcibly();
      throw new IllegalStateException(bin + " did not print its listening address: " + e.getMessage(), e);
    }
  }

  private static void readStdout(InputStream out, CompletableFuture<String> address) {
    try (BufferedReader r = new BufferedReader(new InputStreamReader(out, StandardCharsets.UTF_8))) {
      String line;
      while ((line = r.readLine()) != null) {
        if (!address.isDone() && line.startsWith(LISTENING)) {
          address.complete(line.substring(LISTENING.length()).trim());
        }
      }
      address.completeExceptionally(new IllegalStateException("contextd exited before listening"));
    } catch (IOException e) {
      address.completeExceptionally(e);
    }
  }

  @Override
  public void close() throws InterruptedException {
    Runtime.getRuntime().removeShutdownHook(killer);
    process.destroy();
    if (!process.waitFor(10, TimeUnit.SECONDS)) {
      process.destroyForcibly();
      process.waitFor();
    }
  }

  /** Makes a key offline with {@code contextd keys add} in the config's {@code auth.keys_file}; returns it. */
  public static String addKey(Path config, String tenant, String role) throws IOException, InterruptedException {
    Process p = new ProcessBuilder(binary().toString(), "keys", "add", "--tenant", tenant, "--role", role,
        "--store", "memory", "--config", config.toString())
        .redirectErrorStream(false).start();
    // The key's one line is tiny and the note on stderr short: reading them in turn cannot block.
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
    String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8).trim();
    if (p.waitFor() != 0) {
      throw new IllegalStateException("contextd keys add exited with " + p.exitValue() + ": " + err);
    }
    return out;
  }
}
