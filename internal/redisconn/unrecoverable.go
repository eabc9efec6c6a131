package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// settingError marks a failure of NewClient that the settings cause, found
// without the server's help (TLS files) or from what it said (a cluster node
// without "cluster: true").
type settingError struct{ err error }

func (e *settingError) Error() string { return e.err.Error() }
func (e *settingError) Unwrap() error { return e.err }

// unrecoverableReplies start the Redis error replies to a connection's setup
// (HELLO/AUTH, SELECT, the first command) that the same settings get again
// from the same server: credentials or ACL rules it rejects, a database it
// does not have, cluster mode against a server without it. go-redis has no
// types for them; redis.HasErrorPrefix also accepts them after "ERR ".
var unrecoverableReplies = []string{
	"NOAUTH", "WRONGPASS", "NOPERM",
	"invalid password",                         // AUTH before Redis 6
	"Client sent AUTH, but no password is set", // a password for a server without one (before Redis 6)
	"AUTH <password> called without any password configured",
	"DB index is out of range",
	"This instance has cluster support disabled",
}

// Unrecoverable reports whether an error of NewClient would come back on
// every retry with the same settings, so that a component fails Start
// instead of waiting for the server: a rejected password or ACL user, a TLS
// misconfiguration (see TLSMisconfigured and checkTLSMismatch), or a setting
// the server refuses.
// Everything else (connection refused or reset, timeouts, DNS failures,
// LOADING, MASTERDOWN, too many clients…) is a server that is down, starting
// or unreachable for now, and worth retrying.
func Unrecoverable(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*settingError](err); ok {
		return true
	}
	if TLSMisconfigured(err) {
		return true
	}
	if _, ok := errors.AsType[redis.Error](err); !ok {
		return false
	}
	for _, prefix := range unrecoverableReplies {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	return false
}

// TLSMisconfigured reports whether err is a TLS failure that the client's or
// the server's TLS settings cause, which no retry fixes: a certificate that
// does not verify (unknown authority, wrong name, expired), an alert from the
// server (a client certificate missing or refused, no common protocol
// version or cipher), or a TLS handshake answered by a server that does not
// speak TLS. It serves both servers' clients: go-redis and pgx return these
// crypto/tls and crypto/x509 errors wrapped.
func TLSMisconfigured(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true // the server's first bytes are not a TLS record: plain text
	}
	if _, ok := errors.AsType[tls.AlertError](err); ok {
		return true
	}
	// crypto/tls reports an alert received from the server as a net.OpError
	// with Op "remote error" around its unexported alert type.
	if opErr, ok := errors.AsType[*net.OpError](err); ok && opErr.Op == "remote error" {
		return true
	}
	return false
}

// probeTimeout bounds the probe of checkTLSMismatch.
const probeTimeout = time.Second

// checkTLSMismatch turns err, a failed PING of addr, into a settingError when
// the server speaks the other protocol than the client: a plain-text Redis
// leaves a TLS handshake waiting (it reads the ClientHello as an inline
// command that never ends) and a TLS port closes on plain text, which look
// like a server that is slow or restarting. So when err is a timeout, EOF or
// reset, a short probe asks the server in the other protocol: a RESP reply
// to an inline PING, or a completed TLS handshake.
func checkTLSMismatch(ctx context.Context, addr string, useTLS bool, err error) error {
	plainText := func() error {
		return &settingError{fmt.Errorf(`%w: the server answers in plain text, but "tls" is configured (tls::insecure is false); `+
			`set tls::insecure: true, or enable TLS on the server`, err)}
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok && useTLS {
		return plainText() // the ClientHello happened to hold a newline: Redis answered it
	}
	if !mayBeTLSMismatch(err) || errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	// The PING may have used up ctx's time: the probe gets its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	switch {
	case useTLS && speaksPlainRESP(ctx, addr):
		return plainText()
	case !useTLS && speaksTLS(ctx, addr):
		return &settingError{fmt.Errorf(`%w: the server speaks TLS, but "tls::insecure" is true; `+
			`configure "tls" (ca_file, and cert_file/key_file if it requires client certificates)`, err)}
	}
	return err
}

// mayBeTLSMismatch reports whether err is how a protocol mismatch shows:
// a timeout, an EOF or a reset, and not a Redis reply or a TLS error.
func mayBeTLSMismatch(err error) bool {
	if _, ok := errors.AsType[redis.Error](err); ok || TLSMisconfigured(err) {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	netErr, ok := errors.AsType[net.Error](err)
	return ok && netErr.Timeout()
}

// speaksPlainRESP reports whether addr answers an inline PING in RESP.
func speaksPlainRESP(ctx context.Context, addr string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		return false
	}
	return first[0] == '+' || first[0] == '-' // +PONG, or -NOAUTH and the like
}

// speaksTLS reports whether addr completes a TLS handshake.
func speaksTLS(ctx context.Context, addr string) bool {
	d := tls.Dialer{Config: &tls.Config{
		// Only asks whether the server speaks TLS: nothing is sent over
		// the connection, so its certificate does not matter.
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}
