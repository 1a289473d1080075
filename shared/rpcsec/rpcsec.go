// Package rpcsec secures pgcaravan's gRPC endpoints: a bearer token checked
// on every call (except the health service, which probes call without
// credentials), and TLS or mutual TLS from certificate files. Server and
// client sides live together so they always agree. It imports no pgcaravan
// component and no generated proto.
package rpcsec

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TokenEnv is the environment variable the token may come from.
const TokenEnv = "PGCARAVAN_AUTH_TOKEN"

// ErrTokenRequired means a server would listen beyond loopback without a token.
var ErrTokenRequired = errors.New("rpcsec: an auth token is required when listening beyond loopback")

// Config is one side's security settings.
type Config struct {
	// Token is the shared bearer token; empty means none.
	Token string
	// CertFile and KeyFile are this side's certificate (server: TLS;
	// client: a client certificate for mutual TLS).
	CertFile, KeyFile string
	// CAFile verifies the other side (server: require client
	// certificates signed by it; client: verify the server).
	CAFile string
	// ServerName overrides the name a client checks in the server's
	// certificate.
	ServerName string
}

// TLS says whether TLS is configured.
func (c Config) TLS() bool { return c.CertFile != "" || c.CAFile != "" }

// IsLoopback says whether a listen address only accepts local connections.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckListen refuses a listen address beyond loopback without a token.
func (c Config) CheckListen(addr string) error {
	if c.Token == "" && !IsLoopback(addr) {
		return fmt.Errorf("%w: --listen %s accepts connections from other hosts; pass --auth-token or set %s", ErrTokenRequired, addr, TokenEnv)
	}
	return nil
}

// ServerOptions returns the gRPC server options for c.
func ServerOptions(c Config) ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("rpcsec: load --tls-cert %s and --tls-key %s: %w", c.CertFile, c.KeyFile, err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pool, err := loadPool(c.CAFile)
			if err != nil {
				return nil, err
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	} else if c.CAFile != "" {
		return nil, errors.New("rpcsec: --tls-ca on a server needs --tls-cert and --tls-key too")
	}
	if c.Token != "" {
		check := tokenCheck(c.Token)
		opts = append(opts,
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if err := check(ctx, info.FullMethod); err != nil {
					return nil, err
				}
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if err := check(ss.Context(), info.FullMethod); err != nil {
					return err
				}
				return h(srv, ss)
			}))
	}
	return opts, nil
}

// tokenCheck returns the check of one call's bearer token. Health checks
// pass without one, so orchestrators can probe.
func tokenCheck(token string) func(ctx context.Context, method string) error {
	want := []byte("Bearer " + token)
	return func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return nil
		}
		md, _ := metadata.FromIncomingContext(ctx)
		for _, got := range md.Get("authorization") {
			if subtle.ConstantTimeCompare([]byte(got), want) == 1 {
				return nil
			}
		}
		return status.Errorf(codes.Unauthenticated, "missing or wrong bearer token for %s: pass --auth-token or set %s", method, TokenEnv)
	}
}

// DialOptions returns the gRPC client options for c.
func DialOptions(c Config) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if c.TLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
		if c.CAFile != "" {
			pool, err := loadPool(c.CAFile)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = pool
		}
		if c.CertFile != "" || c.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("rpcsec: load --tls-cert %s and --tls-key %s: %w", c.CertFile, c.KeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: c.Token, secure: c.TLS()}))
	}
	return opts, nil
}

// bearer sends the token with every call. Without TLS it still sends it:
// a coordinator on a private network may run without TLS, by choice.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("rpcsec: read --tls-ca %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("rpcsec: --tls-ca %s holds no PEM certificate", file)
	}
	return pool, nil
}
