package contextd_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/contextd/contextd/clients/go/internal/testserver"
)

// server is the contextd every test of this package talks to; tests use their own session
// ids, so they do not see each other.
var server *testserver.Server

func TestMain(m *testing.M) {
	var err error
	server, err = testserver.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	server.Stop()
	os.Exit(code)
}
