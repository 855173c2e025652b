// Package contextd is a thin Go client for contextd, the gRPC service that keeps LLM
// conversations (sessions with history and structured context) and runs their turns.
//
// Dial a server, then work with sessions, turns and tools:
//
//	c, err := contextd.Dial("127.0.0.1:61900")
//	if err != nil { ... }
//	defer c.Close()
//	reply, err := c.Interact(ctx, contextd.Turn{
//		SessionID: "session_alpha",
//		Message:   "Hello, I am John.",
//		Context:   map[string]any{"user_id": "john_doe"},
//	})
//	fmt.Println(reply.Text, reply.Context)
//
// Context goes in as map[string]any (anything encoding/json can encode) and comes back the same
// way; every other result is a typed struct. Errors from the server are gRPC status errors:
// status.FromError and status.Code work on every error this package returns. The generated
// stubs of the whole API are in the gen/contextd/v1 package and reachable from a Client through
// SessionService, InteractService, ToolService and AdminService.
package contextd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Client is a connection to one contextd server. It is safe for concurrent use.
type Client struct {
	conn     *grpc.ClientConn
	sessions contextdv1.SessionServiceClient
	turns    contextdv1.InteractServiceClient
	tools    contextdv1.ToolServiceClient
	models   contextdv1.ModelServiceClient
	admin    contextdv1.AdminServiceClient
}

// Option changes how Dial connects.
type Option func(*dialConfig)

type dialConfig struct {
	tls         *tls.Config
	token       string
	dialOptions []grpc.DialOption
	// PEM material for TLS, read and checked by Dial: the CA (bytes or a file) and the
	// client certificate and key (bytes or files).
	caPEM, certPEM, keyPEM    []byte
	caFile, certFile, keyFile string
}

// WithSystemTLS connects over TLS, trusting the system's roots (Java's tls(), TypeScript's
// tls: true). Without a TLS option the connection is plaintext, as contextd serves by default.
func WithSystemTLS() Option {
	return WithTLS(&tls.Config{MinVersion: tls.VersionTLS12})
}

// WithTLS connects over TLS with the given configuration (WithSystemTLS for the system's
// roots; a nil config means the same). Without it the connection is plaintext, as contextd
// serves by default.
func WithTLS(config *tls.Config) Option {
	return func(d *dialConfig) {
		if config == nil {
			config = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		d.tls = config
	}
}

// WithTLSCA connects over TLS, trusting only the CA certificates in caPEM (PEM) for the
// server's certificate.
func WithTLSCA(caPEM []byte) Option {
	return func(d *dialConfig) { d.caPEM = caPEM }
}

// WithTLSCAFile is WithTLSCA with the CA certificates read from a PEM file (by Dial).
func WithTLSCAFile(path string) Option {
	return func(d *dialConfig) { d.caFile = path }
}

// WithClientCertificate shows this certificate chain and key (PEM) to servers that require
// client certificates (mTLS, `contextd serve --tls-client-ca`). It implies TLS.
func WithClientCertificate(certPEM, keyPEM []byte) Option {
	return func(d *dialConfig) { d.certPEM, d.keyPEM = certPEM, keyPEM }
}

// WithClientCertificateFiles is WithClientCertificate with both read from PEM files (by Dial).
func WithClientCertificateFiles(certFile, keyFile string) Option {
	return func(d *dialConfig) { d.certFile, d.keyFile = certFile, keyFile }
}

// tlsConfig is the TLS configuration the options make; nil for plaintext.
func (d *dialConfig) tlsConfig() (*tls.Config, error) {
	read := func(what, path string, into *[]byte) error {
		if path == "" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("contextd: cannot read the %s %s: %w", what, path, err)
		}
		*into = data
		return nil
	}
	if err := read("CA file", d.caFile, &d.caPEM); err != nil {
		return nil, err
	}
	if err := read("client certificate file", d.certFile, &d.certPEM); err != nil {
		return nil, err
	}
	if err := read("client key file", d.keyFile, &d.keyPEM); err != nil {
		return nil, err
	}
	if d.caPEM == nil && d.certPEM == nil && d.keyPEM == nil {
		return d.tls, nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if d.tls != nil {
		config = d.tls.Clone()
	}
	if d.caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(d.caPEM) {
			return nil, errors.New("contextd: the TLS CA holds no PEM certificate")
		}
		config.RootCAs = pool
	}
	if d.certPEM != nil || d.keyPEM != nil {
		pair, err := tls.X509KeyPair(d.certPEM, d.keyPEM)
		if err != nil {
			return nil, fmt.Errorf("contextd: the client certificate and key cannot be used: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// WithBearerToken sends the API key (`ctxd_…`) as `authorization: Bearer <token>` metadata
// with every call, as a server started with `--auth keys` requires.
func WithBearerToken(token string) Option {
	return func(d *dialConfig) { d.token = token }
}

// WithDialOptions passes extra options to grpc.NewClient, for example interceptors.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(d *dialConfig) { d.dialOptions = append(d.dialOptions, opts...) }
}

// Dial creates a client for the server at target ("host:port" or any gRPC target string). The
// connection is made lazily, on the first call; a server that is not there shows up as an
// error with code Unavailable from that call.
func Dial(target string, opts ...Option) (*Client, error) {
	var cfg dialConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	transport := insecure.NewCredentials()
	if tlsConfig != nil {
		transport = credentials.NewTLS(tlsConfig)
	}
	dialOptions := []grpc.DialOption{grpc.WithTransportCredentials(transport)}
	if cfg.token != "" {
		auth := bearerToken(cfg.token)
		dialOptions = append(dialOptions,
			grpc.WithChainUnaryInterceptor(auth.unary),
			grpc.WithChainStreamInterceptor(auth.stream))
	}
	dialOptions = append(dialOptions, cfg.dialOptions...)
	conn, err := grpc.NewClient(target, dialOptions...)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:     conn,
		sessions: contextdv1.NewSessionServiceClient(conn),
		turns:    contextdv1.NewInteractServiceClient(conn),
		tools:    contextdv1.NewToolServiceClient(conn),
		models:   contextdv1.NewModelServiceClient(conn),
		admin:    contextdv1.NewAdminServiceClient(conn),
	}, nil
}

// Close closes the connection; calls still running fail with code Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying gRPC connection, for calling other services on the same server
// (health, reflection).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// SessionService is the generated stub of contextd.v1.SessionService on this connection.
func (c *Client) SessionService() contextdv1.SessionServiceClient { return c.sessions }

// InteractService is the generated stub of contextd.v1.InteractService on this connection.
func (c *Client) InteractService() contextdv1.InteractServiceClient { return c.turns }

// ToolService is the generated stub of contextd.v1.ToolService on this connection.
func (c *Client) ToolService() contextdv1.ToolServiceClient { return c.tools }

// bearerToken adds the authorization header in interceptors rather than per-RPC credentials,
// because grpc-go refuses per-RPC credentials on plaintext connections and contextd is often
// reached over loopback without TLS.
type bearerToken string

func (t bearerToken) attach(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+string(t))
}

func (t bearerToken) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(t.attach(ctx), method, req, reply, cc, opts...)
}

func (t bearerToken) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
	method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(t.attach(ctx), desc, cc, method, opts...)
}
