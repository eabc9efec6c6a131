package redisconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestUnrecoverableAgainstServers: NewClient's errors against real servers
// are classified by what a retry would meet: a server that is not there is
// worth retrying; a rejected password, a TLS mismatch either way, a
// certificate that does not verify or a setting the server refuses is not.
func TestUnrecoverableAgainstServers(t *testing.T) {
	t.Parallel()
	pki := testservers.NewTestPKI(t)
	otherPKI := testservers.NewTestPKI(t)
	srv := testservers.StartRedisTLS(t, pki) // a plain port and a TLS port
	withPassword := testservers.StartRedis(t)
	require.NoError(t, withPassword.Client(t).Do(t.Context(), "ACL", "SETUSER", "default", "resetpass", ">right-secret").Err())
	plain := NewDefaultClientConfig().TLS
	withCert := tlsSettings(pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile)
	for _, tt := range []struct {
		name          string
		configure     func(c *ClientConfig)
		unrecoverable bool
		wantErr       string
	}{
		{
			name:      "connection refused",
			configure: func(c *ClientConfig) { c.Endpoint = "127.0.0.1:" + strconv.Itoa(testservers.FreePort(t)) },
			wantErr:   "connection refused",
		},
		{
			name:      "unknown host",
			configure: func(c *ClientConfig) { c.Endpoint = "redis.invalid:6379" },
			wantErr:   "redis.invalid",
		},
		{
			name:          "wrong password",
			configure:     func(c *ClientConfig) { c.Endpoint, c.Password = withPassword.Addr, "wrong-secret" },
			unrecoverable: true, wantErr: "WRONGPASS",
		},
		{
			name:          "no password",
			configure:     func(c *ClientConfig) { c.Endpoint = withPassword.Addr },
			unrecoverable: true, wantErr: "NOAUTH",
		},
		{
			name:          "database out of range",
			configure:     func(c *ClientConfig) { c.Endpoint, c.DB = srv.Addr, 99 },
			unrecoverable: true, wantErr: "DB index is out of range",
		},
		{
			name:          "cluster mode against a single server",
			configure:     func(c *ClientConfig) { c.Endpoint, c.Cluster = srv.Addr, true },
			unrecoverable: true, wantErr: "cluster support disabled",
		},
		{
			name:          "plain text to the TLS port",
			configure:     func(c *ClientConfig) { c.Endpoint, c.TLS = srv.TLSAddr, plain },
			unrecoverable: true, wantErr: `the server speaks TLS, but "tls::insecure" is true`,
		},
		{
			name:          "TLS handshake with the plain port",
			configure:     func(c *ClientConfig) { c.Endpoint, c.TLS = srv.Addr, withCert },
			unrecoverable: true, wantErr: `the server answers in plain text, but "tls" is configured`,
		},
		{
			name:          "server certificate of an unknown CA",
			configure:     func(c *ClientConfig) { c.Endpoint, c.TLS = srv.TLSAddr, tlsSettings(otherPKI.CAFile, "", "") },
			unrecoverable: true, wantErr: "certificate signed by unknown authority",
		},
		{
			name:          "client certificate missing",
			configure:     func(c *ClientConfig) { c.Endpoint, c.TLS = srv.TLSAddr, tlsSettings(pki.CAFile, "", "") },
			unrecoverable: true, wantErr: "certificate required",
		},
		{
			name: "unreadable CA file",
			configure: func(c *ClientConfig) {
				c.Endpoint, c.TLS = srv.TLSAddr, tlsSettings("/nonexistent/ca.pem", "", "")
			},
			unrecoverable: true, wantErr: "redis tls",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := NewDefaultClientConfig()
			tt.configure(&cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			client, err := cfg.NewClient(ctx)
			if client != nil {
				_ = client.Close()
			}
			require.ErrorContains(t, err, tt.wantErr)
			assert.Equal(t, tt.unrecoverable, Unrecoverable(err), "%v", err)
		})
	}
}

// TestUnrecoverableReplies classifies the server replies that connecting
// may meet, and the errors of a server that is down or busy.
func TestUnrecoverableReplies(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err           error
		unrecoverable bool
	}{
		{redisError("WRONGPASS invalid username-password pair or user is disabled."), true},
		{redisError("NOAUTH Authentication required."), true},
		{redisError("NOPERM User u has no permissions to run the 'ping' command"), true},
		{redisError("ERR invalid password"), true},
		{redisError("ERR Client sent AUTH, but no password is set"), true},
		{redisError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"), true},
		{redisError("ERR DB index is out of range"), true},
		{redisError("LOADING Redis is loading the dataset in memory"), false},
		{redisError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), false},
		{redisError("BUSY Redis is busy running a script."), false},
		{redisError("ERR max number of clients reached"), false},
		{redisError("CLUSTERDOWN The cluster is down"), false},
		{io.EOF, false},
		{context.DeadlineExceeded, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
		{nil, false},
	} {
		name := "nil"
		if tt.err != nil {
			name = tt.err.Error()
		}
		wrapped := fmt.Errorf("redis ping h:1 (db 0): %w", tt.err)
		if tt.err == nil {
			wrapped = nil
		}
		assert.Equal(t, tt.unrecoverable, Unrecoverable(wrapped), name)
	}
}

// redisError is a server error reply as go-redis returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}
