package testservers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/redis/go-redis/v9"
)

const readyTimeout = 30 * time.Second

// Ports handed out by FreePort come from below the kernel's ephemeral range
// (32768 and up on Linux): a port the kernel picked could be taken, between
// FreePort and the server's bind, by the local end of an outgoing connection
// (replicas, clients, sentinels open many). handedOut keeps one test binary
// from handing the same port out twice.
const (
	freePortMin = 20000
	freePortMax = 32767
)

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// FreePort returns a loopback TCP port that was free a moment ago and that
// this test binary has not handed out before.
func FreePort(t testing.TB) int {
	t.Helper()
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	for range 1000 {
		port := freePortMin + rand.IntN(freePortMax-freePortMin+1) //nolint:gosec // not for security
		if handedOut[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = l.Close()
		handedOut[port] = true
		return port
	}
	t.Fatalf("no free loopback port in %d-%d", freePortMin, freePortMax)
	return 0
}

// process is a server child process that can be stopped and restarted.
type process struct {
	t    testing.TB
	name string
	argv func() []string
	cred *syscall.Credential
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been reaped
}

func (p *process) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	argv := p.argv()
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // test-only: starts a server binary we located
	logFile, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatalf("open %s log: %v", p.name, err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	_ = logFile.Close()
	p.cmd = cmd
	exited := make(chan struct{})
	p.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
}

// running reports whether the last started process is still alive.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		p.cmd = nil
		return false
	default:
		return true
	}
}

// signal sends sig to the server by PID and waits for it to exit.
func (p *process) signal(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	pid := p.cmd.Process.Pid
	if sig == syscall.SIGKILL {
		// The whole process group: a PostgreSQL backend that outlived its
		// postmaster would hold shared memory and block the restart.
		_ = syscall.Kill(-pid, sig)
	} else {
		_ = syscall.Kill(pid, sig)
	}
	select {
	case <-p.exited:
	case <-time.After(readyTimeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.exited
	}
	if sig == syscall.SIGKILL {
		waitGroupGone(pid)
	}
	p.cmd = nil
}

// suspend sends SIGSTOP or SIGCONT to the server by PID.
func (p *process) suspend(sig syscall.Signal) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		p.t.Fatalf("%s is not running", p.name)
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(pid, sig); err != nil {
		p.t.Fatalf("signal %s (pid %d): %v", p.name, pid, err)
	}
	// kill returns before the signal takes effect: wait for the state.
	wantStopped := sig == syscall.SIGSTOP
	deadline := time.Now().Add(readyTimeout)
	for processStopped(pid) != wantStopped {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s (pid %d) did not change state after %s", p.name, pid, sig)
		}
		time.Sleep(time.Millisecond)
	}
}

// processStopped reports whether pid is stopped by a signal (state T in
// /proc/pid/stat, the field after the parenthesized command name).
func processStopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'T'
}

// waitGroupGone waits until no process of group pgid is left.
func waitGroupGone(pgid int) {
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *process) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// RedisServer is a private redis-server on a free loopback port, with AOF
// persistence (appendfsync always) so a restart keeps what it acknowledged.
type RedisServer struct {
	Addr string
	// TLSAddr is the TLS port's address, for a server from StartRedisTLS.
	TLSAddr string
	proc    *process
}

// StartRedis starts a private redis-server; it is killed at cleanup.
// Extra arguments are passed as redis-server options (e.g. "--appendonly", "no").
func StartRedis(t testing.TB, extraArgs ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found on PATH (install Debian's redis-server): %v", err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	s := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.proc = &process{
		t: t, name: "redis-server", log: filepath.Join(dir, "redis.log"),
		argv: func() []string {
			return append([]string{
				bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
				"--save", "", "--appendonly", "yes", "--appendfsync", "always",
				"--daemonize", "no", "--protected-mode", "no",
				// A replica syncs at once (default: wait 5s for other replicas).
				"--repl-diskless-sync-delay", "0",
			}, extraArgs...)
		},
	}
	s.Start()
	t.Cleanup(func() { s.proc.signal(syscall.SIGKILL) })
	return s
}

// Client returns a go-redis client of the server, closed at cleanup. It
// keeps working across a restart of the server (go-redis reconnects).
func (s *RedisServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start (re)starts the server and waits until it answers PING.
func (s *RedisServer) Start() {
	s.proc.t.Helper()
	s.proc.start()
	waitReady(s.proc, s.Addr, func() error { return rawPing(s.Addr) })
}

// rawPing sends an inline PING without go-redis, whose pool logs every
// refused dial through its global logger.
func rawPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err = conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("unexpected reply %q", buf[:n])
	}
	return nil
}

// waitReady polls ready until it succeeds, restarting the process if it died
// early (PostgreSQL exits when the shared memory of a killed predecessor is
// still being released).
func waitReady(p *process, what string, ready func() error) {
	p.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s on %s not ready: %v\n%s", p.name, what, err, p.logTail())
		}
		if !p.running() {
			p.start()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartRedisReplica starts a private redis-server replicating master and
// waits until its link to master is up; it is killed at cleanup. Extra
// arguments are passed as with StartRedis.
func StartRedisReplica(t testing.TB, master *RedisServer, extraArgs ...string) *RedisServer {
	t.Helper()
	host, port, err := net.SplitHostPort(master.Addr)
	if err != nil {
		t.Fatalf("master address %q: %v", master.Addr, err)
	}
	s := StartRedis(t, append([]string{"--replicaof", host, port}, extraArgs...)...)
	s.waitLinkUp(t, master.Addr)
	return s
}

// waitLinkUp waits until the replica s reports its link to master up.
func (s *RedisServer) waitLinkUp(t testing.TB, master string) {
	t.Helper()
	s.waitReplicationInfo(t, "replica "+s.Addr+" of "+master+" not in sync", func(info string) bool {
		return strings.Contains(info, "master_link_status:up")
	})
}

// WaitReplicasAcked waits until the server has at least one replica and
// every replica has acknowledged its whole replication stream, as WAIT
// counts them (a resumed replica catches up first).
func (s *RedisServer) WaitReplicasAcked(t testing.TB) {
	t.Helper()
	s.waitReplicationInfo(t, "replicas of "+s.Addr+" did not acknowledge", replicasAcked)
}

// waitReplicationInfo polls INFO replication until done accepts it, and
// fails the test with msg, the last reply and the server's log after
// readyTimeout.
func (s *RedisServer) waitReplicationInfo(t testing.TB, msg string, done func(info string) bool) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
	defer c.Close()
	deadline := time.Now().Add(readyTimeout)
	for {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && done(info) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v\n%s\n%s", msg, err, info, s.proc.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// replicasAcked reports whether an INFO replication reply lists replicas
// whose acknowledged offsets all reach master_repl_offset.
func replicasAcked(info string) bool {
	var masterOffset string
	var acked []string
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
			masterOffset = v
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, ",offset=") {
			_, rest, _ := strings.Cut(line, ",offset=")
			off, _, _ := strings.Cut(rest, ",")
			acked = append(acked, off)
		}
	}
	if masterOffset == "" || len(acked) == 0 {
		return false
	}
	want, err := strconv.ParseInt(masterOffset, 10, 64)
	if err != nil {
		return false
	}
	for _, a := range acked {
		if n, err := strconv.ParseInt(a, 10, 64); err != nil || n < want {
			return false
		}
	}
	return true
}

// RedisSentinel is a private Redis Sentinel on a free loopback port that
// monitors one master, with a 500ms down-after so that tests fail over fast.
type RedisSentinel struct {
	Addr string
	// TLSAddr is the TLS port's address, for a sentinel from
	// StartRedisSentinelTLS.
	TLSAddr    string
	MasterName string
	proc       *process
}

// StartRedisSentinel starts a sentinel monitoring master under masterName
// (quorum 1) and waits until it has discovered replicas replicas of it; it is
// killed at cleanup.
func StartRedisSentinel(t testing.TB, master *RedisServer, masterName string, replicas int) *RedisSentinel {
	t.Helper()
	return startSentinel(t, master.Addr, masterName, replicas, "")
}

// startSentinel starts a sentinel monitoring the master at masterAddr, with
// extraConf appended to its configuration file.
func startSentinel(t testing.TB, masterAddr, masterName string, replicas int, extraConf string) *RedisSentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found on PATH (install Debian's redis-server): %v", err)
	}
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		t.Fatalf("master address %q: %v", masterAddr, err)
	}
	dir := t.TempDir()
	sentinelPort := FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf") // the sentinel rewrites it
	content := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nprotected-mode no\n"+
		"sentinel monitor %s %s %s 1\n"+
		"sentinel down-after-milliseconds %s 500\n"+
		"sentinel failover-timeout %s 5000\n%s",
		sentinelPort, dir, masterName, host, port, masterName, masterName, extraConf)
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatalf("write sentinel config: %v", err)
	}
	s := &RedisSentinel{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(sentinelPort)), MasterName: masterName}
	s.proc = &process{
		t: t, name: "redis-sentinel", log: filepath.Join(dir, "sentinel.log"),
		argv: func() []string { return []string{bin, conf, "--sentinel"} },
	}
	s.proc.start()
	waitReady(s.proc, s.Addr, func() error { return rawPing(s.Addr) })
	t.Cleanup(func() { s.proc.signal(syscall.SIGKILL) })
	c := s.Client(t)
	deadline := time.Now().Add(readyTimeout)
	for {
		found, err := c.Replicas(context.Background(), masterName).Result()
		ready := 0
		for _, r := range found {
			// Connected and in sync: a replica the sentinel may promote.
			if r["flags"] == "slave" && r["master-link-status"] == "ok" {
				ready++
			}
		}
		if err == nil && ready >= replicas {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel %s has %d promotable replicas of %s, want %d: %v %v\n%s", s.Addr, ready, masterName, replicas, found, err, s.proc.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns a client of the sentinel's own commands, closed at cleanup.
func (s *RedisSentinel) Client(t testing.TB) *redis.SentinelClient {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// MasterAddr returns the address the sentinel currently gives for the master.
func (s *RedisSentinel) MasterAddr(ctx context.Context, t testing.TB) string {
	t.Helper()
	hostPort, err := s.Client(t).GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil || len(hostPort) != 2 {
		t.Fatalf("sentinel %s: master of %s: %v %v", s.Addr, s.MasterName, hostPort, err)
	}
	return net.JoinHostPort(hostPort[0], hostPort[1])
}

// Pause stops the server with SIGSTOP: its connections stay open but it
// answers nothing (a replica acknowledges no writes) until Resume.
func (s *RedisServer) Pause() { s.proc.suspend(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *RedisServer) Resume() { s.proc.suspend(syscall.SIGCONT) }

// Stop shuts the server down with SIGTERM (it rewrites nothing: AOF is synced).
func (s *RedisServer) Stop() { s.proc.signal(syscall.SIGTERM) }

// Kill stops the server with SIGKILL.
func (s *RedisServer) Kill() { s.proc.signal(syscall.SIGKILL) }

// PostgresServer is a private PostgreSQL cluster on a free loopback port.
type PostgresServer struct {
	Port int
	// sslParams are the DSN parameters of a connection: no TLS, or TLS
	// verified against the server's CA (StartPostgresTLS).
	sslParams string
	proc      *process
}

// StartPostgres runs initdb in a temporary directory and starts postgres on
// a free loopback port with trust authentication. When the test runs as
// root, the server runs as the "postgres" system user (PostgreSQL refuses
// root). The server is killed and its files removed at cleanup.
func StartPostgres(t testing.TB) *PostgresServer {
	t.Helper()
	return startPostgres(t, nil)
}

// startPostgres starts a private PostgreSQL; with pki, it serves TLS only.
func startPostgres(t testing.TB, pki *TestPKI) *PostgresServer {
	t.Helper()
	binDir, err := postgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: the postgres user must own the directory, and the
	// parent that t.TempDir creates is private to root.
	dir, err := os.MkdirTemp("", "pgtest-") //nolint:usetesting // see above
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cred, err := postgresCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(binDir, "initdb"), "-D", dataDir, "-U", "postgres", "-A", "trust", //nolint:gosec // test-only
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := FreePort(t)
	s := &PostgresServer{Port: port, sslParams: "sslmode=disable"}
	args := []string{
		filepath.Join(binDir, "postgres"), "-D", dataDir, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100",
	}
	if pki != nil {
		args = append(args, pki.postgresTLSArgs(t, dataDir, cred)...)
		s.sslParams = "sslmode=verify-full&sslrootcert=" + url.QueryEscape(pki.CAFile)
	}
	s.proc = &process{
		t: t, name: "postgres", cred: cred, log: filepath.Join(dir, "postgres.log"),
		argv: func() []string { return args },
	}
	s.Start()
	t.Cleanup(func() { s.proc.signal(syscall.SIGKILL) })
	return s
}

// DSN returns the DSN of database db on this server.
func (s *PostgresServer) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?%s", s.Port, db, s.sslParams)
}

// FreshDatabase creates a database on this server and returns its DSN.
func (s *PostgresServer) FreshDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, s.DSN("postgres"))
}

// Start (re)starts the server and waits until it accepts connections.
func (s *PostgresServer) Start() {
	s.proc.t.Helper()
	s.proc.start()
	waitReady(s.proc, s.DSN("postgres"), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(context.Background())
	})
}

// Stop shuts the server down fast (SIGINT: abort transactions, clean exit).
func (s *PostgresServer) Stop() { s.proc.signal(syscall.SIGINT) }

// Kill stops the server with SIGKILL; it recovers from WAL on Start.
func (s *PostgresServer) Kill() { s.proc.signal(syscall.SIGKILL) }

func postgresBinDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		return "", errors.New("postgres binaries not found on PATH or in /usr/lib/postgresql/*/bin (install Debian's postgresql)")
	}
	sort.Strings(matches)
	return filepath.Dir(matches[len(matches)-1]), nil
}

// postgresCredential returns the credential to run PostgreSQL with: nil when
// not root, else the postgres system user, who is given dir.
func postgresCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres system user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("chown %s: %w", dir, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil //nolint:gosec // ids come from the passwd database
}
