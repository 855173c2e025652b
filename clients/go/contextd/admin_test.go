package contextd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/contextd/contextd/clients/go/contextd"
	"github.com/contextd/contextd/clients/go/internal/testserver"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestAdminCallsWithoutAuth runs on a server of its own: the shared one's tenant list is the
// admin scenario's to check.
func TestAdminCallsWithoutAuth(t *testing.T) {
	srv, err := testserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := contextd.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	created, err := c.CreateKey(ctx, "go-admin-t", contextd.WithRole(contextd.RoleAdmin), contextd.WithLabel("go"), contextd.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(created.GetSecret()) < 6 || created.GetSecret()[:5] != "ctxd_" || created.GetKey().GetExpireTime() == nil || created.GetKey().GetRole() != contextd.RoleAdmin {
		t.Fatalf("created %v", created)
	}
	keys, err := c.ListKeys(ctx, "go-admin-t")
	if err != nil || len(keys) != 1 || keys[0].GetKeyId() != created.GetKey().GetKeyId() {
		t.Fatalf("keys %v, %v", keys, err)
	}
	tenants, err := c.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tenant := range tenants {
		found = found || (tenant.GetTenantId() == "go-admin-t" && tenant.GetKeys() == 1)
	}
	if !found {
		t.Fatalf("tenants %v", tenants)
	}
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: "go-export"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Interact(ctx, contextd.Turn{SessionID: "go-export", Message: "hello"}); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for record, err := range c.ExportTenant(ctx, "default") {
		if err != nil {
			t.Fatal(err)
		}
		if record.GetSessionId() == "go-export" {
			if record.GetSession() != nil {
				kinds = append(kinds, "session")
			} else if record.GetMessage() != nil {
				kinds = append(kinds, "message")
			}
		}
	}
	if fmt.Sprint(kinds) != "[session message message]" {
		t.Fatalf("export records %v", kinds)
	}
	revoked, err := c.RevokeKey(ctx, created.GetKey().GetKeyId())
	if err != nil || revoked.GetRevokeTime() == nil {
		t.Fatalf("revoked %v, %v", revoked, err)
	}
	deleted, err := c.DeleteTenant(ctx, "go-admin-t")
	if err != nil || deleted.GetDeletedKeys() != 1 {
		t.Fatalf("deleted %v, %v", deleted, err)
	}
	if _, err := c.DeleteSession(ctx, "go-export"); err != nil {
		t.Fatal(err)
	}
}

// TestAuthKeys: a --auth keys server refuses a call without a key, serves one with it, and
// refuses a user key the admin calls.
func TestAuthKeys(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "contextd.toml")
	text := fmt.Sprintf("[auth]\nkeys_file = %q\n", filepath.Join(dir, "keys.toml"))
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	admin, err := testserver.AddKey(config, "acme", "admin")
	if err != nil {
		t.Fatal(err)
	}
	user, err := testserver.AddKey(config, "acme", "user")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := testserver.StartWith("--auth", "keys", "--config", config)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx := context.Background()

	anonymous, err := contextd.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	if _, err := anonymous.ListSessions(ctx, 0, ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a key: %v", err)
	}

	userClient, err := contextd.Dial(srv.Addr, contextd.WithBearerToken(user))
	if err != nil {
		t.Fatal(err)
	}
	defer userClient.Close()
	if s, err := userClient.CreateSession(ctx, contextd.SessionOptions{ID: "auth-go"}); err != nil || s.ID != "auth-go" {
		t.Fatalf("with a user key: %v, %v", s, err)
	}
	tenants, err := userClient.ListTenants(ctx)
	if err != nil || len(tenants) != 1 || tenants[0].GetTenantId() != "acme" {
		t.Fatalf("a user's tenants: %v, %v", tenants, err)
	}
	if _, err := userClient.ListKeys(ctx, ""); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a user key listing keys: %v", err)
	}

	adminClient, err := contextd.Dial(srv.Addr, contextd.WithBearerToken(admin))
	if err != nil {
		t.Fatal(err)
	}
	defer adminClient.Close()
	if keys, err := adminClient.ListKeys(ctx, "acme"); err != nil || len(keys) != 2 {
		t.Fatalf("an admin listing keys: %v, %v", keys, err)
	}
}
