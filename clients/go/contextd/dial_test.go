package contextd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/contextd/contextd/clients/go/contextd"
	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// echoAuthServer answers GetSession with the authorization header it received as the session
// id, so the test sees exactly what the client sent.
type echoAuthServer struct {
	contextdv1.UnimplementedSessionServiceServer
}

func (echoAuthServer) GetSession(ctx context.Context, _ *contextdv1.GetSessionRequest) (*contextdv1.GetSessionResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 {
		return nil, status.Errorf(codes.Unauthenticated, "expected one authorization header, got %d", len(auth))
	}
	return &contextdv1.GetSessionResponse{Session: &contextdv1.Session{SessionId: auth[0]}}, nil
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "contextd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func serveTLS(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	contextdv1.RegisterSessionServiceServer(srv, echoAuthServer{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestDialTLSWithBearerToken(t *testing.T) {
	cert, pool := selfSigned(t)
	addr := serveTLS(t, cert)
	c, err := contextd.Dial(addr, contextd.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), contextd.WithBearerToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.GetSession(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "Bearer s3cret" {
		t.Fatalf("server saw authorization %q", s.ID)
	}
}

func TestDialTLSRefusesUntrustedServer(t *testing.T) {
	cert, _ := selfSigned(t)
	addr := serveTLS(t, cert)
	c, err := contextd.Dial(addr, contextd.WithTLS(&tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.GetSession(context.Background(), "x")
	wantCode(t, err, codes.Unavailable)
}

// echoAuthStream answers StreamResponse with the authorization header as the reply text.
type echoAuthStream struct {
	contextdv1.UnimplementedInteractServiceServer
}

func (echoAuthStream) StreamResponse(_ *contextdv1.StreamResponseRequest, stream grpc.ServerStreamingServer[contextdv1.StreamResponseResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	auth := md.Get("authorization")
	if len(auth) != 1 {
		return status.Errorf(codes.Unauthenticated, "expected one authorization header, got %d", len(auth))
	}
	return stream.Send(&contextdv1.StreamResponseResponse{Event: &contextdv1.StreamResponseResponse_Completed{
		Completed: &contextdv1.InteractResponse{Response: auth[0]},
	}})
}

// TestBearerTokenOnPlaintextStreams checks the token also travels on plaintext connections and
// on streaming calls.
func TestBearerTokenOnPlaintextStreams(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	contextdv1.RegisterInteractServiceServer(srv, echoAuthStream{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	c, err := contextd.Dial(lis.Addr().String(), contextd.WithBearerToken("t0ken"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reply, err := contextd.Collect(c.StreamResponse(context.Background(), contextd.Turn{SessionID: "s", Message: "hi"}))
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text != "Bearer t0ken" {
		t.Fatalf("server saw authorization %q", reply.Text)
	}
}

// The system's roots do not include the test's self-signed certificate: WithSystemTLS speaks
// TLS (the failure is the certificate's, not a plaintext connection's) and refuses the server.
func TestDialSystemTLSRefusesAPrivateCertificate(t *testing.T) {
	cert, _ := selfSigned(t)
	addr := serveTLS(t, cert)
	c, err := contextd.Dial(addr, contextd.WithSystemTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.GetSession(context.Background(), "x")
	wantCode(t, err, codes.Unavailable)
	if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want a certificate error, got %v", err)
	}
}
