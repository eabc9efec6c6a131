package testservers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestPKI is a throwaway certificate authority, with a server certificate
// for 127.0.0.1 and localhost and a client certificate, as PEM files.
type TestPKI struct {
	CAFile         string
	ServerCertFile string
	ServerKeyFile  string
	ClientCertFile string
	ClientKeyFile  string
}

// NewTestPKI creates the CA and both certificates (valid for a day) in a
// temporary directory.
func NewTestPKI(t testing.TB) *TestPKI {
	t.Helper()
	dir := t.TempDir()
	p := &TestPKI{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "otelcol-analytics test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	writePEM(t, p.CAFile, "CERTIFICATE", caDER)

	leaf := func(serial int64, name string, usage []x509.ExtKeyUsage, certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usage,
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("create %s certificate: %v", name, err)
		}
		writePEM(t, certFile, "CERTIFICATE", der)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("marshal %s key: %v", name, err)
		}
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	}
	// A Redis server presents its certificate as a client too, to its master
	// and to the servers a sentinel monitors.
	leaf(2, "127.0.0.1", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, p.ServerCertFile, p.ServerKeyFile)
	leaf(3, "otelcol-analytics test client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, p.ClientCertFile, p.ClientKeyFile)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func writePEM(t testing.TB, path, blockType string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// redisTLSArgs are the redis-server options that serve TLS with p's server
// certificate and trust p's CA for client certificates (and for the TLS
// links of replication and sentinels).
func (p *TestPKI) redisTLSArgs() []string {
	return []string{
		"--tls-cert-file", p.ServerCertFile, "--tls-key-file", p.ServerKeyFile,
		"--tls-ca-cert-file", p.CAFile,
	}
}

// StartRedisTLS starts a private redis-server like StartRedis that also
// serves TLS on TLSAddr with p's server certificate. Clients of the TLS port
// must present a certificate of p's CA unless extraArgs say
// "--tls-auth-clients", "no". The plain port stays open for the tests' own
// checks.
func StartRedisTLS(t testing.TB, p *TestPKI, extraArgs ...string) *RedisServer {
	t.Helper()
	tlsPort := FreePort(t)
	args := append([]string{"--tls-port", strconv.Itoa(tlsPort)}, p.redisTLSArgs()...)
	s := StartRedis(t, append(args, extraArgs...)...)
	s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	return s
}

// StartRedisReplicaTLS starts a replica of master that replicates over
// master's TLS port (and so announces its own TLS port), and waits until its
// link is up.
func StartRedisReplicaTLS(t testing.TB, master *RedisServer, p *TestPKI, extraArgs ...string) *RedisServer {
	t.Helper()
	host, port, err := net.SplitHostPort(master.TLSAddr)
	if err != nil {
		t.Fatalf("master TLS address %q: %v", master.TLSAddr, err)
	}
	s := StartRedisTLS(t, p, append([]string{"--replicaof", host, port, "--tls-replication", "yes"}, extraArgs...)...)
	s.waitLinkUp(t, master.TLSAddr)
	return s
}

// StartRedisSentinelTLS starts a sentinel like StartRedisSentinel that also
// serves TLS on TLSAddr and talks to master (at its TLS port) and its
// replicas over TLS.
func StartRedisSentinelTLS(t testing.TB, master *RedisServer, masterName string, replicas int, p *TestPKI) *RedisSentinel {
	t.Helper()
	tlsPort := FreePort(t)
	conf := fmt.Sprintf("tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-replication yes\n",
		tlsPort, p.ServerCertFile, p.ServerKeyFile, p.CAFile)
	s := startSentinel(t, master.TLSAddr, masterName, replicas, conf)
	s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	return s
}

// StartPostgresTLS starts a private PostgreSQL like StartPostgres that takes
// TLS connections only, with p's server certificate; DSN and FreshDatabase
// then verify it against p's CA (sslmode=verify-full).
func StartPostgresTLS(t testing.TB, p *TestPKI) *PostgresServer {
	t.Helper()
	return startPostgres(t, p)
}

// postgresTLSArgs copies p's server certificate into dataDir (PostgreSQL
// wants its key private to the server's user) and replaces pg_hba.conf so
// that TCP connections must use TLS; it returns the server options.
func (p *TestPKI) postgresTLSArgs(t testing.TB, dataDir string, cred *syscall.Credential) []string {
	t.Helper()
	cert, key := filepath.Join(dataDir, "server.crt"), filepath.Join(dataDir, "server.key")
	hba := filepath.Join(dataDir, "pg_hba.conf")
	for _, f := range []struct{ src, dst, content string }{
		{src: p.ServerCertFile, dst: cert},
		{src: p.ServerKeyFile, dst: key},
		{dst: hba, content: "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"},
	} {
		b := []byte(f.content)
		if f.src != "" {
			var err error
			if b, err = os.ReadFile(f.src); err != nil {
				t.Fatalf("read %s: %v", f.src, err)
			}
		}
		if err := os.WriteFile(f.dst, b, 0o600); err != nil { //nolint:gosec // test-only: a path in the server's own temp dir
			t.Fatalf("write %s: %v", f.dst, err)
		}
		if cred != nil {
			if err := os.Chown(f.dst, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatalf("chown %s: %v", f.dst, err)
			}
		}
	}
	return []string{"-c", "ssl=on", "-c", "ssl_cert_file=" + cert, "-c", "ssl_key_file=" + key}
}
