package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"microlab/services/platform/control"
	"microlab/services/platform/testenv"
)

// sideCounter is a reverse proxy in front of a real upstream that counts the requests
// it passed on, by "METHOD path": which side the gateway asked.
type sideCounter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *sideCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[key]
}

func countingProxy(t *testing.T, target string) (string, *sideCounter) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &sideCounter{seen: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.seen[r.Method+" "+r.URL.Path]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, c
}

// startMonolith runs the real monolith on a database of its own.
func startMonolith(t *testing.T, share testenv.Env) string {
	t.Helper()
	env := share.Share(t, "monolith", true)
	env["BCRYPT_COST"] = "4"
	delete(env, "JWT_SEED") // its own development key: tokens of two issuers
	launch(t, filepath.Join(buildUpstreams(t), "monolith"), env)
	return "http://" + env["HTTP_ADDR"]
}

func tokenKid(t *testing.T, token string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, &tokenClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// TestStranglerRoutes: strangler.routes sends each route family to the side it names,
// live, against the real users, catalog, orders and monolith. Tokens of either issuer
// verify (the key set is the union of both JWKS); an order placed on one side is still
// found after orders moves (GET /orders/{id} falls back on a 404), and an account
// registered on one side still logs in after users moves (login falls back on a 401).
func TestStranglerRoutes(t *testing.T) {
	t.Parallel()
	up := startUpstreams(t)
	mono := startMonolith(t, up.usersEnv)
	monoURL, onMono := countingProxy(t, mono)
	catalogURL, onCatalog := countingProxy(t, up.catalog)
	ordersURL, onOrders := countingProxy(t, up.orders)
	usersURL, onUsers := countingProxy(t, up.users)
	ls := &liveSettings{cur: control.Defaults()}
	g := New(Config{UsersURL: usersURL, CatalogURL: catalogURL, OrdersURL: ordersURL, MonolithURL: monoURL,
		UpstreamTimeout: time.Minute, BreakerFailures: 5, BreakerOpenFor: 10 * time.Second},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	g.Follow(ls.get)
	mux := http.NewServeMux()
	g.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	gw := srv.URL
	route := func(v string) { ls.set(t, control.StranglerRoutes, v) }

	// Default: everything on services; the monolith is not asked for anything but keys.
	email, a := register(t, gw, "Sam")
	if a.Status != 201 || onUsers.count("POST /users") != 1 || onMono.count("POST /users") != 0 {
		t.Fatalf("register on services: %d %s (users %d, monolith %d)", a.Status, a.Body, onUsers.count("POST /users"), onMono.count("POST /users"))
	}
	servicesToken := login(t, gw, email, "Sam-secret")
	onServices := placeOrder(t, gw, servicesToken, validOrder(), nil)
	if onOrders.count("POST /orders") != 1 || onMono.count("POST /orders") != 0 {
		t.Fatal("the order did not go to orders")
	}
	if a := do(t, "GET", gw+"/api/v1/products/LAB-MUG", "", nil, nil); a.Status != 200 || onCatalog.count("GET /products/LAB-MUG") != 1 {
		t.Fatalf("product on services: %d, catalog asked %d times", a.Status, onCatalog.count("GET /products/LAB-MUG"))
	}

	// products=monolith: the next read goes to the monolith, same answer.
	route("products=monolith")
	if a := do(t, "GET", gw+"/api/v1/products/LAB-MUG", "", nil, nil); a.Status != 200 || onMono.count("GET /products/LAB-MUG") != 1 ||
		onCatalog.count("GET /products/LAB-MUG") != 1 {
		t.Fatalf("product on the monolith: %d (monolith %d, catalog %d)", a.Status, onMono.count("GET /products/LAB-MUG"), onCatalog.count("GET /products/LAB-MUG"))
	}

	// orders=monolith: a new order is final at once; the one placed on services is
	// still readable (404 on the monolith, then asked of orders).
	route("products=monolith,orders=monolith")
	a = do(t, "POST", gw+"/api/v1/orders", servicesToken, validOrder(), nil)
	var placed struct{ OrderID, Status string }
	a.decode(t, &placed)
	if a.Status != 202 || placed.Status != "confirmed" || onMono.count("POST /orders") != 1 {
		t.Fatalf("order on the monolith: %d %s", a.Status, a.Body)
	}
	for _, id := range []string{placed.OrderID, onServices} {
		a := do(t, "GET", gw+"/api/v1/orders/"+id, servicesToken, nil, nil)
		var o struct{ OrderID, SagaMode string }
		a.decode(t, &o)
		if a.Status != 200 || o.OrderID != id {
			t.Fatalf("GET order %s after the move: %d %s", id, a.Status, a.Body)
		}
		if wantMono := id == placed.OrderID; (o.SagaMode == "monolith") != wantMono {
			t.Fatalf("order %s served with sagaMode %q", id, o.SagaMode)
		}
	}
	if onMono.count("GET /orders/"+onServices) != 1 || onOrders.count("GET /orders/"+onServices) != 1 {
		t.Fatalf("fallback: monolith asked %d, orders %d times for the services order",
			onMono.count("GET /orders/"+onServices), onOrders.count("GET /orders/"+onServices))
	}
	if a := do(t, "GET", gw+"/api/v1/orders/00000000-0000-0000-0000-000000000000", servicesToken, nil, nil); a.Status != 404 {
		t.Fatalf("an order neither side has: %d, want 404", a.Status)
	}

	// users=monolith: the demo account logs in on the monolith, with the monolith's key,
	// and the gateway accepts that token; Sam, registered on services, still logs in
	// (401 on the monolith, then users).
	route("users=monolith,products=monolith,orders=monolith")
	monoToken := login(t, gw, "alice@example.com", "alice-secret")
	if onMono.count("POST /login") != 1 || tokenKid(t, monoToken) == tokenKid(t, servicesToken) {
		t.Fatalf("alice's login: monolith asked %d times, kid %s (users' %s)", onMono.count("POST /login"), tokenKid(t, monoToken), tokenKid(t, servicesToken))
	}
	if a := do(t, "GET", gw+"/api/v1/home", monoToken, nil, nil); a.Status != 200 {
		t.Fatalf("home with a monolith token: %d %s", a.Status, a.Body)
	} else {
		var h struct{ Degraded []string }
		a.decode(t, &h)
		if len(h.Degraded) != 0 {
			t.Fatalf("home degraded: %s", a.Body)
		}
	}
	samAgain := login(t, gw, email, "Sam-secret")
	if tokenKid(t, samAgain) != tokenKid(t, servicesToken) || onUsers.count("POST /login") != 2 {
		t.Fatalf("Sam's login after users moved: kid %s, users asked %d times", tokenKid(t, samAgain), onUsers.count("POST /login"))
	}
	if a := do(t, "GET", gw+"/api/v1/home", samAgain, nil, nil); a.Status != 200 {
		t.Fatalf("home for Sam: %d %s", a.Status, a.Body)
	} else {
		var h struct{ Degraded []string }
		a.decode(t, &h)
		if len(h.Degraded) != 0 {
			t.Fatalf("home for Sam (registered on services, users on the monolith) degraded: %s", a.Body)
		}
	}
	if a := do(t, "POST", gw+"/api/v1/auth/login", "", map[string]string{"email": email, "password": "wrong-secret"}, nil); a.Status != 401 {
		t.Fatalf("a wrong password on both sides: %d, want 401", a.Status)
	}

	// Back to services: new orders go to orders again; the monolith's order stays readable.
	route("users=services,products=services,orders=services")
	placeOrder(t, gw, servicesToken, validOrder(), nil)
	if onOrders.count("POST /orders") != 2 {
		t.Fatalf("orders asked %d times, want 2", onOrders.count("POST /orders"))
	}
	if a := do(t, "GET", gw+"/api/v1/orders/"+placed.OrderID, servicesToken, nil, nil); a.Status != 200 {
		t.Fatalf("the monolith's order after moving back: %d %s", a.Status, a.Body)
	}
}
