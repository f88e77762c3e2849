package pg

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsTransient reports whether err is the database being unavailable or busy for a moment
// rather than anything wrong with the work: a retry cures it once PostgreSQL is back
// (unreachable, restarting, out of connections), or at once (a serialization failure or
// deadlock, where PostgreSQL itself asks the client to retry the transaction). Message
// consumers retry such errors until the database is back instead of dead-lettering the
// message (bus.ConsumeOptions.Transient).
//
// Everything else (a constraint violation, a syntax error, bad data) is not transient:
// the same message would fail the same way forever.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return transientCode(pe.Code)
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true // could not reach the server, or it refused us for now
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded)
}

// transientCode: the SQLSTATEs that say "not now" rather than "never"
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
func transientCode(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
		return true
	case strings.HasPrefix(code, "53"): // insufficient resources: too many connections, disk full, out of memory
		return true
	case strings.HasPrefix(code, "57P"): // admin or crash shutdown, cannot connect now (starting up)
		return true
	}
	switch code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03", // lock_not_available (lock_timeout)
		"57014", // query_canceled (statement_timeout)
		"25P03": // idle_in_transaction_session_timeout: the session was ended, the work rolled back
		return true
	}
	return false
}
