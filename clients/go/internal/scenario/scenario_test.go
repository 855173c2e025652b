package scenario

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/contextd/contextd/clients/go/internal/testserver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// scenarioDir is the shared scenario folder, clients/scenarios, seen from this package.
func scenarioDir(t *testing.T) string {
	if dir := os.Getenv("CONTEXTD_SCENARIOS"); dir != "" {
		return dir
	}
	root, err := testserver.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "clients", "scenarios")
}

// TestScenarios runs every shared scenario file as a subtest against a contextd of its own.
func TestScenarios(t *testing.T) {
	dir := scenarioDir(t)
	files, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no scenario files in %s", dir)
	}
	for _, f := range files {
		t.Run(f.Name, func(t *testing.T) {
			server, err := testserver.Start()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Stop()
			conn, err := grpc.NewClient(server.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := Run(context.Background(), conn, f); err != nil {
				t.Fatal(err)
			}
		})
	}
}
