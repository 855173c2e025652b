// Package testserver starts a real contextd for this module's tests: the binary named by
// CONTEXTD_BIN, or <repo>/target/debug/contextd, listening on a free loopback port.
package testserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Server is a running contextd process.
type Server struct {
	// Addr is the host:port it listens on.
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// Binary is the contextd executable the tests run: $CONTEXTD_BIN, else
// <repo>/target/debug/contextd, the repository found by walking up from the working directory.
func Binary() (string, error) {
	if bin := os.Getenv("CONTEXTD_BIN"); bin != "" {
		return bin, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "target", "debug", "contextd")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no contextd binary at %s: build it with `cargo build` or set CONTEXTD_BIN", bin)
	}
	return bin, nil
}

// RepoRoot is the contextd repository holding this module: the nearest parent of the working
// directory with both Cargo.toml and proto/.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isFile(filepath.Join(dir, "Cargo.toml")) && isDir(filepath.Join(dir, "proto")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the contextd repository (no parent with Cargo.toml and proto/); set CONTEXTD_BIN")
		}
		dir = parent
	}
}

func isFile(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }
func isDir(p string) bool  { st, err := os.Stat(p); return err == nil && st.IsDir() }

var (
	storeFlagOnce sync.Once
	storeFlag     []string
)

// serveArgs are the arguments of `contextd serve` for tests: a free loopback port, and the
// in-memory store on builds that have a choice of store (so tests leave no files behind).
func serveArgs(bin string) []string {
	storeFlagOnce.Do(func() {
		help, _ := exec.Command(bin, "serve", "--help").Output()
		if bytes.Contains(help, []byte("--store")) {
			storeFlag = []string{"--store", "memory"}
		}
	})
	return append([]string{"serve", "--listen", "127.0.0.1:0"}, storeFlag...)
}

// Start runs contextd and waits until it prints `contextd listening on <addr>`.
func Start() (*Server, error) { return StartWith() }

// StartWith is Start with extra `contextd serve` arguments (such as --tls-cert, or "--auth", "keys").
func StartWith(extra ...string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append(serveArgs(bin), extra...)...)
	cmd.SysProcAttr = sysProcAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr tailBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{cmd: cmd, done: make(chan struct{})}
	addrCh := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if addr, ok := strings.CutPrefix(scanner.Text(), "contextd listening on "); ok {
				addrCh <- strings.TrimSpace(addr)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.Addr = <-addrCh:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited before listening: %s", bin, stderr.String())
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("%s printed no listening address within 60s: %s", bin, stderr.String())
	}
}

// Stop kills the server and waits for it to exit.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// tailBuffer keeps the last 8 KiB written to it (the server's log, for error messages).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 8192; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// AddKey makes a key offline with `contextd keys add` in the auth.keys_file of the config
// file and returns it.
func AddKey(config, tenant, role string) (string, error) {
	bin, err := Binary()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(bin, "keys", "add", "--tenant", tenant, "--role", role,
		"--store", "memory", "--config", config).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Errorf("contextd keys add: %w: %s", err, exit.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}
