// Package e2e holds the end-to-end tests: the whole shop started as real processes (the
// same binaries and supervisor `lab up` uses) against real RabbitMQ and PostgreSQL, each
// test with its own vhost, databases and ports, driven only through the gateway's public
// API like any client. Ledgers are read back from the services' internal APIs.
package e2e
