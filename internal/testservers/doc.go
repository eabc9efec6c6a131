// Package testservers gives tests real Redis and PostgreSQL servers: the
// shared ones that `make test` brings up (each test isolated by a fresh key
// prefix or a fresh database), and private instances on free loopback ports
// that a test may stop, kill and restart by PID: standalone, replicas,
// sentinels, a Redis Cluster, and TLS variants that use a throwaway
// certificate authority (NewTestPKI).
//
// A server that cannot be reached fails the test; nothing here ever skips,
// so a green run always means the counting path ran against real servers.
package testservers
