#!/usr/bin/env bash
# ensure-services.sh: make sure Redis and PostgreSQL answer on loopback for tests and `make run`.
#
#   Redis       REDIS_ENDPOINT (default 127.0.0.1:6379), no auth.
#   PostgreSQL  PG_ENDPOINT    (default 127.0.0.1:5432), user postgres, database postgres,
#               passwordless (trust) login over TCP.
#
# A service that answers is left alone. One that does not is started if installed: Redis as a daemon
# with the persistence the README's Guarantees need (AOF, appendfsync always, noeviction) in a data
# dir of its own (REDIS_DATA_DIR, default /var/tmp/otelcol-analytics-redis-<port>), PostgreSQL
# through the Debian cluster on that port (pg_ctlcluster), or else a cluster this script creates
# under PG_FALLBACK_DIR (initdb, trust auth). Missing packages are
# installed with apt-get when running as root; otherwise the script says what to install and exits 1.
# An existing cluster's authentication is never rewritten: if it refuses passwordless login, the
# script explains how to fix pg_hba.conf and exits 1.
#
# --run (`make run`): the services the sample config (testdata/config.yaml) will use, read from the
# same environment. A Redis or PostgreSQL the user points it at (REDIS_SENTINEL_MASTER,
# REDIS_USERNAME/REDIS_PASSWORD, REDIS_CLUSTER=true, POSTGRES_DSN) is theirs: it is neither checked
# nor started (the collector reports it if unreachable), and a Redis that asks for a password is fine.
# Only the default local services are brought up, and redis-cli is not required. A local Redis that
# already answers but runs without AOF or with another appendfsync than always gets a warning.
#
# Idempotent; silent when everything is already up (but for that warning). Exit status 0 = both services usable.
set -euo pipefail

RUN_MODE=0
case ${1:-} in
--run) RUN_MODE=1 ;;
"") ;;
*)
	printf 'usage: %s [--run]\n' "$0" >&2
	exit 2
	;;
esac

REDIS_ENDPOINT=${REDIS_ENDPOINT:-127.0.0.1:6379}
PG_ENDPOINT=${PG_ENDPOINT:-127.0.0.1:5432}
PG_USER=postgres
PG_DB=postgres
# Cluster created by this script when no Debian cluster serves PG_ENDPOINT's port.
PG_FALLBACK_DIR=${PG_FALLBACK_DIR:-/var/tmp/otelcol-analytics-pg}
REDIS_WAIT_SECS=${REDIS_WAIT_SECS:-15}
# Data dir (AOF) and log of a Redis this script starts; one per port by default.
REDIS_DATA_DIR=${REDIS_DATA_DIR:-}
PG_WAIT_SECS=${PG_WAIT_SECS:-60}

PG_HBA_MARKER="# otelcol-analytics: trust for local TCP (added by scripts/ensure-services.sh)"

log() { printf 'ensure-services: %s\n' "$*" >&2; }
die() {
	printf 'ensure-services: ERROR: %s\n' "$*" >&2
	exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# split_endpoint HOST:PORT|[V6]:PORT -> sets ep_host, ep_port
split_endpoint() {
	local ep=$1
	if [[ $ep =~ ^\[(.*)\]:([0-9]+)$ ]]; then
		ep_host=${BASH_REMATCH[1]}
		ep_port=${BASH_REMATCH[2]}
	elif [[ $ep =~ ^([^:]*):([0-9]+)$ ]]; then
		ep_host=${BASH_REMATCH[1]:-127.0.0.1}
		ep_port=${BASH_REMATCH[2]}
	else
		die "bad endpoint '$ep' (want host:port)"
	fi
}

is_loopback() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

# ---------------------------------------------------------------------------------------------------
# apt-get (root only), at most once per run

APT_UPDATED=0
apt_install() {
	command -v apt-get >/dev/null 2>&1 || return 1
	if [[ $APT_UPDATED -eq 0 ]]; then
		log "apt-get update"
		# Not fatal: with stale or missing lists the install below fails with its own message.
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 9>&- || log "warning: apt-get update failed"
		APT_UPDATED=1
	fi
	log "apt-get install -y $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2 9>&-
}

# ---------------------------------------------------------------------------------------------------
# Redis

redis_ping() { # host port -> 0 if PONG
	local host=$1 port=$2 reply=""
	if command -v redis-cli >/dev/null 2>&1; then
		reply=$(timeout 3 redis-cli -h "$host" -p "$port" ping 2>&1) || true
	else
		# shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
		reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && printf "%s" "$l"' "$host" "$port" 2>/dev/null) || true
		reply=${reply#+}
		reply=${reply%$'\r'}
	fi
	REDIS_REPLY=$reply
	[[ $reply == PONG ]]
}

REDIS_LOG=""
start_redis() { # host port
	local host=$1 port=$2 dir=${REDIS_DATA_DIR:-/var/tmp/otelcol-analytics-redis-$2} bind
	# A dir of its own, private to the user running the server (created so when missing): the AOF
	# there is what a restart of this Redis reloads.
	[[ -d $dir ]] || mkdir -p -m 0700 "$dir"
	case $host in
	127.0.0.1 | localhost) bind=(127.0.0.1 -::1) ;;
	*) bind=("$host") ;;
	esac
	REDIS_LOG=$dir/redis.log
	log "starting redis-server on $host:$port (AOF with appendfsync always in $dir, log $REDIS_LOG)"
	# docs/guarantees.md: AOF with appendfsync always (each write is on disk before Redis answers),
	# no RDB snapshots (the AOF is the only copy), noeviction (Redis' default, stated here).
	redis-server --daemonize yes --bind "${bind[@]}" --port "$port" --dir "$dir" --logfile "$REDIS_LOG" \
		--appendonly yes --appendfsync always --save "" --maxmemory-policy noeviction >&2 9>&- ||
		die "redis-server failed to start; see $REDIS_LOG"
}

# warn_redis_persistence host port: a Redis this script did not start is never changed, but
# `make run` says when it lacks what the README's Guarantees need (redis-cli and CONFIG allowed).
warn_redis_persistence() {
	local host=$1 port=$2 aof fsync
	command -v redis-cli >/dev/null 2>&1 || return 0
	aof=$(timeout 3 redis-cli -h "$host" -p "$port" --raw config get appendonly 2>/dev/null | sed -n 2p) || return 0
	fsync=$(timeout 3 redis-cli -h "$host" -p "$port" --raw config get appendfsync 2>/dev/null | sed -n 2p) || return 0
	[[ -n $aof && -n $fsync ]] || return 0
	if [[ $aof != yes || $fsync != always ]]; then
		log "warning: Redis on $host:$port runs with appendonly $aof, appendfsync $fsync (left as is);" \
			"acknowledged counts survive a Redis crash only with appendonly yes and appendfsync always (docs/guarantees.md)"
	fi
}

ensure_redis() {
	split_endpoint "$REDIS_ENDPOINT"
	local host=$ep_host port=$ep_port
	if redis_ping "$host" "$port"; then
		[[ $RUN_MODE -eq 1 ]] && warn_redis_persistence "$host" "$port"
		return 0
	fi
	if [[ $REDIS_REPLY == *NOAUTH* || $REDIS_REPLY == *WRONGPASS* || $REDIS_REPLY == *DENIED* ]]; then
		[[ $RUN_MODE -eq 1 ]] && return 0 # up; the collector logs in with the config's credentials
		die "Redis on $host:$port requires authentication ($REDIS_REPLY); tests need a Redis without a password"
	fi
	is_loopback "$host" || die "Redis at $REDIS_ENDPOINT does not answer PING and is not local; start it yourself"

	if ! command -v redis-server >/dev/null 2>&1; then
		if is_root; then
			apt_install redis-server || die "could not install redis-server with apt-get; install Redis with your package manager"
			# The package may have started its own service on 6379 already (its own config: the
			# warning says what it lacks).
			if redis_ping "$host" "$port"; then
				[[ $RUN_MODE -eq 1 ]] && warn_redis_persistence "$host" "$port"
				return 0
			fi
		else
			die "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server) or run this script as root"
		fi
	fi

	start_redis "$host" "$port"
	local i
	for ((i = 0; i < REDIS_WAIT_SECS * 5; i++)); do
		redis_ping "$host" "$port" && return 0
		sleep 0.2
	done
	die "redis-server started but $host:$port does not answer PING after ${REDIS_WAIT_SECS}s (last reply: ${REDIS_REPLY:-none}); see $REDIS_LOG"
}

# ---------------------------------------------------------------------------------------------------
# PostgreSQL

pg_bindir() { # newest /usr/lib/postgresql/<ver>/bin holding postgres, else dirname of postgres on PATH
	local d
	d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' -printf '%h\n' 2>/dev/null | sort -V | tail -n1)
	if [[ -z $d ]] && command -v postgres >/dev/null 2>&1; then
		d=$(dirname "$(command -v postgres)")
	fi
	[[ -n $d ]] && printf '%s\n' "$d"
}

pg_tool() { # name -> path of a client tool (PATH first, then the server bindir)
	local name=$1 bindir
	if command -v "$name" >/dev/null 2>&1; then
		command -v "$name"
		return 0
	fi
	bindir=$(pg_bindir) || return 1
	[[ -x $bindir/$name ]] && printf '%s\n' "$bindir/$name"
}

pg_accepting() { # host port -> 0 if the server accepts connections (auth not checked)
	local host=$1 port=$2 isready
	if isready=$(pg_tool pg_isready); then
		"$isready" -q -h "$host" -p "$port" -t 2 >/dev/null 2>&1
	else
		# shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
		timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
	fi
}

pg_login() { # host port -> 0 if user postgres can run a query on db postgres without a password
	local host=$1 port=$2 psql
	if ! psql=$(pg_tool psql); then
		PG_LOGIN_ERR="psql not found (cannot verify login; install postgresql-client)"
		return 2
	fi
	PG_LOGIN_ERR=$(env -u PGPASSWORD -u PGPASSFILE -u PGSERVICE PGCONNECT_TIMEOUT=5 \
		"$psql" -X -w -q -h "$host" -p "$port" -U "$PG_USER" -d "$PG_DB" -tAc 'SELECT 1' 2>&1 >/dev/null) && return 0
	return 1
}

# Debian clusters (pg_lsclusters): prints "ver name" of the cluster configured on the given port.
debian_cluster_for_port() {
	local port=$1
	command -v pg_lsclusters >/dev/null 2>&1 || return 1
	pg_lsclusters --no-header 2>/dev/null | awk -v p="$port" '$3 == p { print $1, $2; exit }' | grep .
}

# Adds trust for user postgres on loopback at the top of pg_hba.conf. Only called for clusters this
# script installed or created.
pg_hba_trust_loopback() {
	local hba=$1
	grep -qF "$PG_HBA_MARKER" "$hba" && return 0
	log "configuring trust auth for $PG_USER on 127.0.0.1/::1 in $hba (cluster installed by this script)"
	local tmp
	tmp=$(mktemp)
	{
		printf '%s\n' "$PG_HBA_MARKER"
		printf 'host    all    %s    127.0.0.1/32    trust\n' "$PG_USER"
		printf 'host    all    %s    ::1/128         trust\n' "$PG_USER"
		cat "$hba"
	} >"$tmp"
	cat "$tmp" >"$hba" # keep owner and mode of the original file
	rm -f "$tmp"
}

start_debian_cluster() { # ver name
	local ver=$1 name=$2
	if pg_ctlcluster "$ver" "$name" status >/dev/null 2>&1; then
		return 0 # running (maybe still starting up): just wait for it
	fi
	log "starting PostgreSQL cluster $ver/$name (pg_ctlcluster)"
	pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 9>&- ||
		die "pg_ctlcluster $ver $name start failed; see /var/log/postgresql/postgresql-$ver-$name.log"
}

reload_debian_cluster() { # ver name
	pg_ctlcluster --skip-systemctl-redirect "$1" "$2" reload >&2 9>&- || true
}

# run_as_pg_owner cmd... : initdb/pg_ctl refuse to run as root; use the postgres OS user then.
run_as_pg_owner() {
	if is_root; then
		id postgres >/dev/null 2>&1 || die "running as root but OS user 'postgres' does not exist (needed to run initdb/pg_ctl)"
		if command -v runuser >/dev/null 2>&1; then
			runuser -u postgres -- "$@"
		else
			su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
		fi
	else
		"$@"
	fi
}

# Fallback: a cluster created and owned by this script (trust auth from initdb).
start_fallback_cluster() { # host port
	local host=$1 port=$2 bindir dir=$PG_FALLBACK_DIR
	bindir=$(pg_bindir) || die "PostgreSQL server binaries not found"
	mkdir -p "$dir"
	if is_root; then chown postgres: "$dir"; fi
	chmod 0700 "$dir"
	if [[ ! -f $dir/data/PG_VERSION ]]; then
		log "creating PostgreSQL cluster in $dir/data (initdb, trust auth, superuser $PG_USER)"
		run_as_pg_owner "$bindir/initdb" -D "$dir/data" -U "$PG_USER" -A trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 ||
			die "initdb failed; see $dir/initdb.log"
	fi
	if run_as_pg_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
		return 0 # running (maybe still starting up): just wait for it
	fi
	local listen=$host
	[[ $host == localhost ]] && listen=127.0.0.1
	log "starting PostgreSQL from $dir/data on $listen:$port"
	run_as_pg_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$PG_WAIT_SECS" \
		-o "-c listen_addresses=$listen -p $port -c unix_socket_directories=$dir" start >&2 9>&- ||
		die "pg_ctl start failed; see $dir/postgres.log"
}

wait_pg() { # host port
	local i
	for ((i = 0; i < PG_WAIT_SECS * 5; i++)); do
		pg_accepting "$1" "$2" && return 0
		sleep 0.2
	done
	return 1
}

explain_pg_auth() { # host port ["ver name" of the Debian cluster]
	local hba="" reload="pg_ctlcluster --skip-systemctl-redirect <ver> <cluster> reload"
	if [[ -n ${3:-} ]]; then
		hba="/etc/postgresql/${3% *}/${3#* }/pg_hba.conf"
		reload="pg_ctlcluster --skip-systemctl-redirect ${3% *} ${3#* } reload"
	elif [[ -f $PG_FALLBACK_DIR/data/pg_hba.conf ]]; then
		hba=$PG_FALLBACK_DIR/data/pg_hba.conf
	fi
	die "PostgreSQL on $1:$2 is up but user '$PG_USER' cannot log in to database '$PG_DB' without a password:
    ${PG_LOGIN_ERR//$'\n'/$'\n'    }
  The tests need trust auth for $PG_USER over TCP on loopback. Add these lines at the top of ${hba:-pg_hba.conf}:
    host  all  $PG_USER  127.0.0.1/32  trust
    host  all  $PG_USER  ::1/128       trust
  then reload PostgreSQL: $reload
  This script does not change the authentication of a cluster it did not create."
}

ensure_postgres() {
	split_endpoint "$PG_ENDPOINT"
	local host=$ep_host port=$ep_port cluster="" installed_now=0 rc

	if pg_accepting "$host" "$port"; then
		rc=0
		pg_login "$host" "$port" || rc=$?
		case $rc in
		0) return 0 ;;
		2)
			log "warning: $PG_LOGIN_ERR"
			return 0
			;;
		*) explain_pg_auth "$host" "$port" "$(debian_cluster_for_port "$port" || true)" ;;
		esac
	fi
	is_loopback "$host" || die "PostgreSQL at $PG_ENDPOINT is not reachable and is not local; start it yourself"

	if [[ -z $(pg_bindir || true) ]]; then
		if is_root; then
			apt_install postgresql || die "could not install postgresql with apt-get; install PostgreSQL server + client with your package manager"
			installed_now=1
		else
			die "PostgreSQL is not installed. Install it (Debian/Ubuntu: sudo apt-get install -y postgresql) or run this script as root"
		fi
	fi

	if cluster=$(debian_cluster_for_port "$port"); then
		local ver=${cluster% *} name=${cluster#* }
		if [[ $installed_now -eq 1 ]]; then
			# Fresh Debian cluster from the package: scram for host connections by default.
			pg_hba_trust_loopback "/etc/postgresql/$ver/$name/pg_hba.conf"
		fi
		if pg_accepting "$host" "$port"; then
			reload_debian_cluster "$ver" "$name" # started by the package postinst
		else
			start_debian_cluster "$ver" "$name"
		fi
	else
		cluster=""
		start_fallback_cluster "$host" "$port"
	fi

	wait_pg "$host" "$port" || die "PostgreSQL was started but $host:$port does not accept connections after ${PG_WAIT_SECS}s"
	rc=0
	pg_login "$host" "$port" || rc=$?
	case $rc in
	0 | 2) return 0 ;;
	*) explain_pg_auth "$host" "$port" "$cluster" ;;
	esac
}

# The tests that kill, restart or cluster Redis start private redis-servers and join a cluster
# with redis-cli, even when the shared Redis already answers (it may run elsewhere, e.g. in a container).
ensure_redis_binaries() {
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
	if is_root; then
		apt_install redis-server redis-tools || die "could not install redis-server and redis-tools with apt-get; install Redis with your package manager"
	else
		die "redis-server and redis-cli are needed on PATH for the private-instance tests (Debian/Ubuntu: sudo apt-get install -y redis-server redis-tools)"
	fi
}

# ---------------------------------------------------------------------------------------------------

main() {
	# Serialise concurrent runs (parallel make targets); best effort when flock is missing.
	# Every command that may leave a daemon behind runs with 9>&- so the daemon does not keep the lock.
	if command -v flock >/dev/null 2>&1; then
		exec 9>"${TMPDIR:-/tmp}/otelcol-analytics-ensure-services.$(id -u).lock"
		flock -w 300 9 || die "timed out waiting for another ensure-services.sh run"
	fi
	if [[ $RUN_MODE -eq 0 ]]; then
		ensure_redis
		ensure_redis_binaries
		ensure_postgres
		return
	fi
	if [[ -n ${REDIS_SENTINEL_MASTER:-} || -n ${REDIS_USERNAME:-} || -n ${REDIS_PASSWORD:-} || ${REDIS_CLUSTER:-false} == true ]]; then
		log "Redis: using the configured one (REDIS_SENTINEL_MASTER, REDIS_USERNAME/REDIS_PASSWORD or REDIS_CLUSTER set); not checked here"
	else
		ensure_redis
	fi
	if [[ -n ${POSTGRES_DSN:-} ]]; then
		log "PostgreSQL: using POSTGRES_DSN; not checked here"
	else
		ensure_postgres
	fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
