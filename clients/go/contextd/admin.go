package contextd

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The admin calls (contextd.v1.AdminService) need an admin key, or a server with
// authentication off, where every caller is the admin of tenant "default". They return the
// generated messages as they are, like ListModels: keys, tenant usage and export records are
// plain records.

// The roles a key can have.
const (
	// RoleUser reaches the tenant's own sessions only (the default of CreateKey).
	RoleUser = contextdv1.KeyRole_KEY_ROLE_USER
	// RoleAdmin also manages keys and tenants.
	RoleAdmin = contextdv1.KeyRole_KEY_ROLE_ADMIN
)

// KeyOption sets a field of a new key (CreateKey).
type KeyOption func(*contextdv1.CreateKeyRequest)

// WithRole sets the key's role (RoleUser or RoleAdmin); default RoleUser.
func WithRole(role contextdv1.KeyRole) KeyOption {
	return func(r *contextdv1.CreateKeyRequest) { r.Role = role }
}

// WithLabel sets the key's note, such as who holds it (at most 256 bytes).
func WithLabel(label string) KeyOption {
	return func(r *contextdv1.CreateKeyRequest) { r.Label = label }
}

// WithTTL limits how long the key works; without it the key works until revoked.
func WithTTL(ttl time.Duration) KeyOption {
	return func(r *contextdv1.CreateKeyRequest) { r.Ttl = durationpb.New(ttl) }
}

// AdminService is the generated stub of contextd.v1.AdminService on this connection.
func (c *Client) AdminService() contextdv1.AdminServiceClient { return c.admin }

// CreateKey makes an API key for the tenant. The response's Secret is the key itself, shown
// only here: dial with WithBearerToken(secret) to use it. Key is what ListKeys will show.
func (c *Client) CreateKey(ctx context.Context, tenantID string, opts ...KeyOption) (*contextdv1.CreateKeyResponse, error) {
	req := &contextdv1.CreateKeyRequest{TenantId: tenantID}
	for _, opt := range opts {
		opt(req)
	}
	return c.admin.CreateKey(ctx, req)
}

// ListKeys lists the keys (never their secrets) of one tenant, or of every tenant when
// tenantID is empty, ordered by tenant and creation.
func (c *Client) ListKeys(ctx context.Context, tenantID string) ([]*contextdv1.ApiKey, error) {
	resp, err := c.admin.ListKeys(ctx, &contextdv1.ListKeysRequest{TenantId: tenantID})
	if err != nil {
		return nil, err
	}
	return resp.GetKeys(), nil
}

// RevokeKey revokes a key by its id (as ListKeys shows it) and returns it, revoked; code
// NotFound for an unknown id.
func (c *Client) RevokeKey(ctx context.Context, keyID string) (*contextdv1.ApiKey, error) {
	resp, err := c.admin.RevokeKey(ctx, &contextdv1.RevokeKeyRequest{KeyId: keyID})
	if err != nil {
		return nil, err
	}
	return resp.GetKey(), nil
}

// ListTenants lists tenants with what they store: every tenant for an admin, a user key's
// own tenant otherwise.
func (c *Client) ListTenants(ctx context.Context) ([]*contextdv1.TenantUsage, error) {
	resp, err := c.admin.ListTenants(ctx, &contextdv1.ListTenantsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetTenants(), nil
}

// ExportTenant yields all of a tenant's data: each session (GetSession), followed by its
// history oldest first (GetMessage). A failure ends the iteration with a non-nil error;
// stopping the loop early cancels the call.
func (c *Client) ExportTenant(ctx context.Context, tenantID string) iter.Seq2[*contextdv1.ExportTenantResponse, error] {
	return func(yield func(*contextdv1.ExportTenantResponse, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.admin.ExportTenant(ctx, &contextdv1.ExportTenantRequest{TenantId: tenantID})
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			record, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(record, nil) {
				return
			}
		}
	}
}

// DeleteTenant deletes all of a tenant's sessions, their histories and its keys, and returns
// the counts (zero for a tenant that stores nothing).
func (c *Client) DeleteTenant(ctx context.Context, tenantID string) (*contextdv1.DeleteTenantResponse, error) {
	return c.admin.DeleteTenant(ctx, &contextdv1.DeleteTenantRequest{TenantId: tenantID})
}
