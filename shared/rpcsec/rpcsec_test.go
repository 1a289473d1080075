package rpcsec

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// pki writes a CA and a certificate it signed for 127.0.0.1 (server) and
// one for a client, as PEM files in dir.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey, otherCA string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert, key, write(name+".pem", "CERTIFICATE", der)
	}
	ca, caKey, caFile := newCA("ca")
	_, _, otherCA := newCA("other")
	leaf := func(name string, usage x509.ExtKeyUsage, serial int64) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	sc, sk := leaf("server", x509.ExtKeyUsageServerAuth, 2)
	cc, ck := leaf("client", x509.ExtKeyUsageClientAuth, 3)
	return pki{ca: caFile, serverCert: sc, serverKey: sk, clientCert: cc, clientKey: ck, otherCA: otherCA}
}

// serve starts a gRPC server with health and reflection under cfg.
func serve(t *testing.T, cfg Config) string {
	t.Helper()
	opts, err := ServerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	reflection.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// call makes a health check and a reflection call (which needs the token).
func call(t *testing.T, addr string, cfg Config) (healthErr, apiErr error) {
	t.Helper()
	opts, err := DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, healthErr = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return healthErr, err
	}
	// A stream the server has already refused makes Send return io.EOF;
	// grpc-go gives its status to the next Recv.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return healthErr, err
	}
	_, apiErr = stream.Recv()
	return healthErr, apiErr
}

func TestToken(t *testing.T) {
	addr := serve(t, Config{Token: "s3cret"})
	h, api := call(t, addr, Config{})
	if h != nil || status.Code(api) != codes.Unauthenticated {
		t.Errorf("no token: health %v, api %v; want health OK and Unauthenticated", h, api)
	}
	if _, api := call(t, addr, Config{Token: "wrong"}); status.Code(api) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", api)
	}
	if h, api := call(t, addr, Config{Token: "s3cret"}); h != nil || api != nil {
		t.Errorf("right token: health %v, api %v", h, api)
	}
}

func TestTLSAndMutualTLS(t *testing.T) {
	p := newPKI(t)
	tlsAddr := serve(t, Config{CertFile: p.serverCert, KeyFile: p.serverKey})
	if _, api := call(t, tlsAddr, Config{CAFile: p.ca}); api != nil {
		t.Errorf("TLS with the right CA: %v", api)
	}
	if _, api := call(t, tlsAddr, Config{CAFile: p.otherCA}); api == nil {
		t.Error("TLS with another CA was accepted")
	}
	if _, api := call(t, tlsAddr, Config{}); api == nil {
		t.Error("plaintext to a TLS server was accepted")
	}
	mtlsAddr := serve(t, Config{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: p.ca, Token: "tok"})
	if _, api := call(t, mtlsAddr, Config{CAFile: p.ca, Token: "tok"}); api == nil {
		t.Error("mTLS server accepted a client without a certificate")
	}
	if _, api := call(t, mtlsAddr, Config{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey, Token: "tok"}); api != nil {
		t.Errorf("mTLS with a client certificate and token: %v", api)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := ServerOptions(Config{CAFile: "x"}); err == nil {
		t.Error("server CA without a certificate accepted")
	}
	if _, err := ServerOptions(Config{CertFile: "/nonexistent", KeyFile: "/nonexistent"}); err == nil {
		t.Error("missing certificate files accepted")
	}
	if err := (Config{}).CheckListen("0.0.0.0:7420"); err == nil {
		t.Error("listening beyond loopback without a token accepted")
	}
	for _, addr := range []string{"127.0.0.1:7420", "localhost:1", "[::1]:7420"} {
		if err := (Config{}).CheckListen(addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}
