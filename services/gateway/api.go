package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"microlab/observability"
	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// Gateway is the public API: its upstreams, how it authenticates and rate-limits.
type Gateway struct {
	log     *slog.Logger
	users   *upstream
	catalog *upstream
	orders  *upstream
	// monolith serves every family that strangler.routes routes to it (strangler.go);
	// nil when MONOLITH_URL is not set, and then every family stays on services.
	monolith *upstream
	auth     *authenticator
	limiter  *limiter
	cache    *responseCache
	knobs    *knobs
}

// New builds the gateway from its config. Nothing is contacted until a request needs it.
func New(cfg Config, log *slog.Logger, tel *observability.Telemetry) *Gateway {
	client := newHTTPClient(tel)
	k := &knobs{cfg: cfg}
	var requests *prometheus.CounterVec
	if tel != nil {
		requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_upstream_requests_total",
			Help: "Attempts the gateway sent to an upstream, by the instance it chose (\"static\": the configured URL)."},
			[]string{"upstream", "upstream_instance"})
		tel.Registry.MustRegister(requests)
	}
	up := func(name, base string) *upstream {
		u := newUpstream(name, base, client, k, log, tel)
		u.requests = requests
		if requests != nil {
			// The configured URL's series exists from the start (0 until a request): a
			// rate of nothing is 0, not no data, on the panels and in the recording rule.
			requests.WithLabelValues(name, staticInstance)
		}
		return u
	}
	g := &Gateway{
		log:     log,
		knobs:   k,
		users:   up("users", cfg.UsersURL),
		catalog: up("catalog", cfg.CatalogURL),
		orders:  up("orders", cfg.OrdersURL),
		limiter: newLimiter(k.rate),
		cache:   newResponseCache(func() time.Duration { return k.settings().CacheTTL() }, tel),
	}
	if cfg.MonolithURL != "" {
		g.monolith = up("monolith", cfg.MonolithURL)
	}
	// Tokens come from users or, for the families routed to it, the monolith: the key
	// set is the union of both JWKS (by kid), so a token verifies whoever issued it.
	g.auth = newAuthenticator(g.users, g.monolith)
	// The registry is on at gateway.discovery=registry, and whenever the weights send
	// some of catalog's traffic to v2: a canary is found only there.
	g.catalog.pool = newPool("catalog", nil, func() bool {
		s := k.settings()
		return s.Discovery() == control.DiscoveryRegistry || s.CatalogWeights()["v2"] > 0
	}, tel)
	g.catalog.pool.settings = k.settings
	return g
}

// Follow makes the lab's settings (current: the watcher's snapshot) override the Config
// live. Call it before serving.
func (g *Gateway) Follow(current func() control.Settings) { g.knobs.cur = current }

// route is one public endpoint. The OpenAPI document must list exactly these (a test
// checks it).
type route struct {
	Method, Pattern string
	Handler         httpx.HandlerFunc
}

func (g *Gateway) routes() []route {
	return []route{
		{"POST", "/api/v1/users", g.register},
		{"POST", "/api/v1/auth/login", g.login},
		{"GET", "/api/v1/products", g.listProducts},
		{"GET", "/api/v1/products/{sku}", g.getProduct},
		{"POST", "/api/v1/orders", g.placeOrder},
		{"GET", "/api/v1/orders", g.listOrders},
		{"GET", "/api/v1/orders/{id}", g.getOrder},
		{"GET", "/api/v1/home", g.home},
		{"GET", "/api/v1/openapi.json", g.openAPI},
	}
}

// Handler is /api/v1 with its middleware: recover → identify the caller → rate limit →
// route (JSON 404/405 for what has no route).
func (g *Gateway) Handler() http.Handler {
	return recoverer(g.log, g.auth.identify(g.limiter.middleware(g, jsonRoutes(g.log, g.mux()))))
}

// mux routes the public endpoints, one pattern per route.
func (g *Gateway) mux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range g.routes() {
		mux.Handle(rt.Method+" "+rt.Pattern, handle(g.log, rt.Handler))
	}
	return mux
}

// Mount registers the public API and a small internal status endpoint on the service
// mux (which already has /healthz and /readyz).
func (g *Gateway) Mount(mux *http.ServeMux) {
	mux.Handle("/api/v1/", g.Handler())
	// Breaker states, for the dashboard and for learners poking at the lab.
	mux.Handle("GET /internal/breakers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		states := map[string]string{"users": g.users.State(), "catalog": g.catalog.State(), "orders": g.orders.State()}
		if g.monolith != nil {
			states["monolith"] = g.monolith.State()
		}
		httpx.WriteJSON(w, http.StatusOK, states)
	}))
	// Anything else is a JSON 404 too.
	mux.Handle("/", recoverer(g.log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, r, g.log, httpx.Errorf(http.StatusNotFound, "not_found", "no such endpoint: %s %s (the API is under /api/v1)", r.Method, r.URL.Path))
	})))
}

// forward relays an upstream's answer: 2xx and 4xx as they are (a 4xx is the upstream
// telling the client what it got wrong: 404, 409 email_taken, 422 unknown_sku), 5xx and
// failures translated by fail.
func forward(ctx context.Context, w http.ResponseWriter, u *upstream, rq request) error {
	rep, err := u.call(ctx, rq)
	if err != nil {
		return u.fail(ctx, err)
	}
	relay(w, rep)
	return nil
}

// relay writes an upstream reply. An upstream 4xx that is not JSON (e.g. a plain-text 404
// from a route it does not have) is rewrapped, so clients always get the error shape.
func relay(w http.ResponseWriter, rep *reply) {
	mt, _, _ := mime.ParseMediaType(rep.Header.Get("Content-Type"))
	if mt != "application/json" {
		if rep.Status >= 400 {
			httpx.WriteJSON(w, rep.Status, errorBody(codeFor(rep.Status), strings.TrimSpace(snippet(rep.Body))))
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.Status)
	_, _ = w.Write(rep.Body)
}

func errorBody(code, msg string) httpx.ErrorBody {
	var b httpx.ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	return b
}

func codeFor(status int) string {
	return strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")
}

// credentials is the body of register and login. Decoded strictly here (unknown fields,
// size, Content-Type); users applies its own rules (email syntax, password length).
type credentials struct {
	Email    string `json:"email"`
	Name     string `json:"name"`
	Password string `json:"password"`
}

func (g *Gateway) register(w http.ResponseWriter, r *http.Request) error {
	var in credentials
	if err := httpx.Decode(w, r, &in, httpx.DefaultMaxBody); err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"email", in.Email}, {"name", in.Name}, {"password", in.Password}} {
		if f.value == "" {
			return missing(f.name)
		}
	}
	u := g.route(r.Context(), control.FamilyUsers)
	return g.post(w, r, u, "/users", in, nil)
}

func (g *Gateway) login(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := httpx.Decode(w, r, &in, httpx.DefaultMaxBody); err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"email", in.Email}, {"password", in.Password}} {
		if f.value == "" {
			return missing(f.name)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	raw, err := json.Marshal(in)
	if err != nil {
		return err
	}
	// An account registered on one side logs in there only (the two user tables are
	// not synchronised): a 401 from the current owner is asked of the other side too
	// (strangler.go).
	return g.fallback(w, r, control.FamilyUsers, request{Method: http.MethodPost, Path: "/login", Body: raw}, http.StatusUnauthorized)
}

// post sends a validated body upstream, once (POSTs are never retried).
func (g *Gateway) post(w http.ResponseWriter, r *http.Request, u *upstream, path string, body any, h http.Header) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return forward(r.Context(), w, u, request{Method: http.MethodPost, Path: path, Header: h, Body: raw})
}

// listProducts and getProduct go through the response cache (cache.go): with
// gateway.cache.ttl at 0s, the default, it passes every read to catalog.
func (g *Gateway) listProducts(w http.ResponseWriter, r *http.Request) error {
	return g.cachedGet(w, r, listKey)
}

func (g *Gateway) getProduct(w http.ResponseWriter, r *http.Request) error {
	sku := r.PathValue("sku")
	// A SKU that cannot exist is answered here, without a call.
	if !skuPattern.MatchString(sku) {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no product with sku %q", sku)
	}
	return g.cachedGet(w, r, listKey+"/"+sku)
}

// userHeader is how orders learns who is asking: set from the verified token, never
// copied from the client (the gateway builds upstream requests from scratch, so a client
// sending X-User-Id itself achieves nothing).
func userHeader(p principal) http.Header {
	return http.Header{"X-User-Id": {p.UserID}}
}

func (g *Gateway) placeOrder(w http.ResponseWriter, r *http.Request) error {
	p, err := requireUser(r, g.users)
	if err != nil {
		return err
	}
	key, err := checkIdempotencyKey(r.Header)
	if err != nil {
		return err
	}
	o, err := decodeOrder(w, r)
	if err != nil {
		return err
	}
	h := userHeader(p)
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	return g.post(w, r, g.route(r.Context(), control.FamilyOrders), "/orders", o.upstreamBody(), h)
}

const (
	maxCursor    = 512
	maxListLimit = 100
)

func (g *Gateway) listOrders(w http.ResponseWriter, r *http.Request) error {
	p, err := requireUser(r, g.users)
	if err != nil {
		return err
	}
	q := url.Values{}
	if v := r.URL.Query().Get("limit"); v != "" || r.URL.Query().Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return httpx.Errorf(http.StatusBadRequest, "invalid_parameter", "limit must be an integer from 1 to %d", maxListLimit)
		}
		q.Set("limit", strconv.Itoa(n))
	}
	if c := r.URL.Query().Get("cursor"); c != "" {
		if len(c) > maxCursor {
			return httpx.Errorf(http.StatusBadRequest, "invalid_parameter", "cursor is too long")
		}
		q.Set("cursor", c) // opaque: orders made it, orders checks it
	}
	if g.knobs.settings().CQRS() {
		q.Set("view", "history") // read.model=cqrs: orders' read model answers (same shape, same cursors)
	}
	path := "/orders"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	// The list is the current owner's only: orders placed on the other side before a
	// route move are not in it (each side pages its own table; merging two cursors is
	// a read model's job). GET /orders/{id} still finds them (the fallback below).
	return forward(r.Context(), w, g.route(r.Context(), control.FamilyOrders), request{Method: http.MethodGet, Path: path, Header: userHeader(p)})
}

func (g *Gateway) getOrder(w http.ResponseWriter, r *http.Request) error {
	p, err := requireUser(r, g.users)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if len(id) > 128 {
		return httpx.Errorf(http.StatusNotFound, "not_found", "no such order")
	}
	// An order placed before orders moved lives on the side that placed it: the facade
	// asks the current owner, and on a 404 the other side (strangler.go).
	return g.fallback(w, r, control.FamilyOrders, request{Method: http.MethodGet, Path: "/orders/" + url.PathEscape(id), Header: userHeader(p)}, http.StatusNotFound)
}

// Home is the BFF answer of GET /api/v1/home: what the shop's first page shows. A part
// whose upstream failed is null and named in Degraded; the rest is still served.
type Home struct {
	User     json.RawMessage   `json:"user"`
	Orders   []json.RawMessage `json:"orders"`
	Products []json.RawMessage `json:"products"`
	Degraded []string          `json:"degraded"`
}

const (
	homeOrders   = 5
	homeFeatured = 4
)

// home fetches the three parts concurrently: the page takes as long as the slowest
// part, not the sum, and one failing service costs one part, not the page.
func (g *Gateway) home(w http.ResponseWriter, r *http.Request) error {
	p, err := requireUser(r, g.users)
	if err != nil {
		return err
	}
	ctx := r.Context()
	settings := g.knobs.settings() // read.model and strangler.routes, once per request
	cqrs := settings.CQRS()
	usersUp, ordersUp, productsUp := g.routeAll(ctx, settings)
	var (
		wg               sync.WaitGroup
		user             json.RawMessage
		orders, prods    []json.RawMessage
		uErr, oErr, pErr error
	)
	wg.Go(func() {
		user, uErr = g.fetchUser(ctx, usersUp, p.UserID)
	})
	wg.Go(func() {
		path := "/orders?limit=" + strconv.Itoa(homeOrders)
		if cqrs {
			path += "&view=history"
		}
		orders, oErr = g.fetchItems(ctx, ordersUp, request{Method: http.MethodGet, Path: path, Header: userHeader(p)}, homeOrders)
	})
	wg.Go(func() {
		// Featured: the first few products of the catalog (sorted by sku). A real shop
		// would ask a merchandising service; the point here is the fan-out.
		prods, pErr = g.fetchItems(ctx, productsUp, request{Method: http.MethodGet, Path: "/products"}, homeFeatured)
	})
	wg.Wait()
	out := Home{User: user, Orders: orders, Products: prods, Degraded: []string{}}
	for _, part := range []struct {
		name string
		err  error
	}{{"user", uErr}, {"orders", oErr}, {"products", pErr}} {
		if part.err != nil {
			g.log.WarnContext(ctx, "home: part degraded", "part", part.name, "err", part.err)
			out.Degraded = append(out.Degraded, part.name)
		}
	}
	if uErr != nil {
		out.User = nil
	}
	if oErr != nil {
		out.Orders = nil
	}
	if pErr != nil {
		out.Products = nil
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// fetchJSON GETs one JSON document; anything but a 200 with JSON is an error.
func (g *Gateway) fetchJSON(ctx context.Context, u *upstream, rq request) (json.RawMessage, error) {
	rep, err := u.call(ctx, rq)
	if err != nil {
		return nil, err
	}
	if rep.Status != http.StatusOK || !json.Valid(rep.Body) {
		return nil, &upstreamCallError{Upstream: u.name, Op: rq.Method + " " + rq.Path, Err: &httpx.Error{Status: rep.Status, Code: "unexpected_status", Message: snippet(rep.Body)}}
	}
	return json.RawMessage(rep.Body), nil
}

// fetchItems GETs a {items: [...]} list and keeps at most n items.
func (g *Gateway) fetchItems(ctx context.Context, u *upstream, rq request, n int) ([]json.RawMessage, error) {
	raw, err := g.fetchJSON(ctx, u, rq)
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, &upstreamCallError{Upstream: u.name, Op: rq.Method + " " + rq.Path, Err: err}
	}
	if list.Items == nil {
		list.Items = []json.RawMessage{}
	}
	return list.Items[:min(n, len(list.Items))], nil
}

//go:embed openapi.json
var openAPIDoc []byte

func (g *Gateway) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPIDoc)
	return nil
}
