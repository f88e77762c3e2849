// Package private runs RabbitMQ nodes and PostgreSQL clusters of one's own: on free
// ports of 127.0.0.1, with their data in a directory of their own, started, stopped and
// started again at will. A chaos test — or `lab chaos` — restarts them to see what the
// shop does when its broker or its database goes away, without touching the machine's
// shared instances, which other labs, tests and programs are using.
//
// testenv wraps these for tests (failing the test, cleaning up at its end); lab uses
// them directly. Nothing here imports testing.
package private

import (
	"fmt"
	"net"
	"time"
)

// freePort returns a TCP port of 127.0.0.1 that nothing listens on right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// answers reports whether something accepts TCP connections on 127.0.0.1:port.
func answers(port int, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), timeout)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
