package testenv

import (
	"net"
	"testing"
)

// Env is an environment for one service under test: its own database, its own lab
// database, its own vhost and a port of its own choosing (AnyAddr; Start and Exec
// write the address it listens on back into HTTP_ADDR). Pass Env.Get as the service's getenv.
type Env map[string]string

// Get reads a variable (the getenv of a service's run).
func (e Env) Get(k string) string { return e[k] }

// ServiceEnv provisions what one service needs and returns its environment. Tests that
// run several services together share the AMQP_URL and LAB_DATABASE_URL of the first
// (see Share).
func ServiceEnv(t testing.TB, service string, withDB bool) Env {
	t.Helper()
	e := Env{
		"AMQP_URL":         VHost(t),
		"LAB_DATABASE_URL": DB(t, Name("t_lab_")),
		"HTTP_ADDR":        AnyAddr,
		// A gRPC server (catalog's) binds a port of its own choosing too, and logs it
		// ("grpc listening"); services without one ignore the variable.
		"GRPC_ADDR":     AnyAddr,
		"INSTANCE_ID":   service + "-test",
		"LOG_LEVEL":     "debug",
		"START_TIMEOUT": "30s",
	}
	if withDB {
		e["DATABASE_URL"] = DB(t, Name("t_"+service+"_"))
	}
	return e
}

// Share returns a copy of e for another service on the same bus and lab database, with
// its own database (if withDB) and port (AnyAddr).
func (e Env) Share(t testing.TB, service string, withDB bool) Env {
	t.Helper()
	out := Env{}
	for k, v := range e {
		out[k] = v
	}
	out["HTTP_ADDR"] = AnyAddr
	out["INSTANCE_ID"] = service + "-test"
	delete(out, "DATABASE_URL")
	if withDB {
		out["DATABASE_URL"] = DB(t, Name("t_"+service+"_"))
	}
	return out
}

// FreePort returns a port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
