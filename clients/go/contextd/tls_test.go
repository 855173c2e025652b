package contextd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/contextd/contextd/clients/go/contextd"
	"github.com/contextd/contextd/clients/go/internal/testserver"
	"google.golang.org/grpc/codes"
)

// testCA issues certificates for the TLS tests (crypto/x509 from the standard library).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
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
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and PKCS#8 key (PEM) for a server (localhost, 127.0.0.1) or a
// client (CN alice with a URI SAN).
func (ca *testCA) issue(t *testing.T, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.Subject = pkix.Name{CommonName: "localhost"}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		spiffe, _ := url.Parse("spiffe://contextd.test/alice")
		tmpl.Subject = pkix.Name{CommonName: "alice"}
		tmpl.URIs = []*url.URL{spiffe}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// startTLS runs a real contextd serving TLS (with mtls, requiring client certificates of ca).
func startTLS(t *testing.T, ca *testCA, mtls bool) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	cert, key := ca.issue(t, true)
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	args := []string{"--tls-cert", write("server.pem", cert), "--tls-key", write("server.key", key)}
	write("ca.pem", ca.pem)
	if mtls {
		args = append(args, "--tls-client-ca", filepath.Join(dir, "ca.pem"))
	}
	server, err := testserver.StartWith(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Stop)
	return server.Addr, dir
}

func TestTLSWithTheServersCA(t *testing.T) {
	ca := newTestCA(t, "contextd test CA")
	addr, dir := startTLS(t, ca, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := contextd.Dial(addr, contextd.WithTLSCAFile(filepath.Join(dir, "ca.pem")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Interact(ctx, contextd.Turn{SessionID: "go-tls", Message: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text == "" {
		t.Fatal("empty reply over TLS")
	}

	// Another CA: the handshake fails and so does the call.
	stranger, err := contextd.Dial(addr, contextd.WithTLSCA(newTestCA(t, "stranger").pem))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	_, err = stranger.ListModels(ctx)
	wantCode(t, err, codes.Unavailable)

	// Plaintext to the TLS port is refused.
	plain, err := contextd.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, err = plain.ListModels(ctx)
	wantCode(t, err, codes.Unavailable)
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "contextd test CA")
	addr, _ := startTLS(t, ca, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cert, key := ca.issue(t, false)
	c, err := contextd.Dial(addr, contextd.WithTLSCA(ca.pem), contextd.WithClientCertificate(cert, key))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Interact(ctx, contextd.Turn{SessionID: "go-mtls", Message: "hello"}); err != nil {
		t.Fatal(err)
	}

	// No client certificate: refused.
	anonymous, err := contextd.Dial(addr, contextd.WithTLSCA(ca.pem))
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	_, err = anonymous.ListModels(ctx)
	wantCode(t, err, codes.Unavailable)
}

func TestTLSOptionsThatCannotBeUsedFailDial(t *testing.T) {
	if _, err := contextd.Dial("localhost:1", contextd.WithTLSCAFile("/nonexistent/ca.pem")); err == nil {
		t.Fatal("a missing CA file was accepted")
	}
	if _, err := contextd.Dial("localhost:1", contextd.WithTLSCA([]byte("not PEM"))); err == nil {
		t.Fatal("a CA without certificates was accepted")
	}
}
