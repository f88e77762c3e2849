// Package control is the lab's control plane as the services see it: settings that
// switch patterns on and off (saga mode, outbox, inbox, ...), persisted in database
// `lab`, announced on the lab.control fanout exchange, read by every instance at start
// (before it consumes or serves) and applied live.
package control

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"microlab/services/contracts"
)

// Setting keys.
const (
	SagaMode        = "saga.mode"
	SagaStepTimeout = "saga.step_timeout"
	OutboxEnabled   = "outbox.enabled"
	InboxEnabled    = "inbox.enabled"

	GatewayBreakerEnabled  = "gateway.breaker.enabled"
	GatewayBreakerFailures = "gateway.breaker.failures"
	GatewayBreakerOpenFor  = "gateway.breaker.open_for"
	GatewayRateLimitRPS    = "gateway.rate_limit.rps"
	GatewayRateLimitBurst  = "gateway.rate_limit.burst"
	GatewayCacheTTL        = "gateway.cache.ttl"
	HTTPTimeout            = "http.timeout"
	HTTPRetries            = "http.retries"
	NotificationsMode      = "notifications.mode"
	ReadModel              = "read.model"
	CatalogTransport       = "catalog.transport"
	GatewayDiscovery       = "gateway.discovery"
	StranglerRoutes        = "strangler.routes"
)

// The route families of strangler.routes (the gateway's public routes grouped by the
// capability that serves them) and the two sides each can be routed to.
const (
	FamilyUsers    = "users"    // register, login, and the user part of /home
	FamilyProducts = "products" // the product reads (and /home's featured products)
	FamilyOrders   = "orders"   // place, list, get (and /home's recent orders)

	RouteServices = "services" // the microservices (users, catalog, orders + the saga)
	RouteMonolith = "monolith" // services/monolith, one process, one database
)

// StranglerFamilies are the families of strangler.routes, in the order its value lists them.
var StranglerFamilies = []string{FamilyUsers, FamilyProducts, FamilyOrders}

// Values of gateway.discovery.
const (
	DiscoveryStatic   = "static"
	DiscoveryRegistry = "registry"
)

// Values of catalog.transport.
const (
	TransportHTTP = "http"
	TransportGRPC = "grpc"
)

// Values of read.model.
const (
	ReadModelComposition = "composition"
	ReadModelCQRS        = "cqrs"
)

// FromEnv is the value of a setting that defers to each service's own configuration
// (its environment: BREAKER_FAILURES, RATE_LIMIT_RPS, UPSTREAM_TIMEOUT, ...). Any other
// value overrides that configuration, live, in every instance.
const FromEnv = "env"

// Values of notifications.mode.
const (
	NotifyAsync = "async"
	NotifySync  = "sync"
)

// Def describes one setting: its default, what it does, and which values it accepts.
type Def struct {
	Key     string
	Default string
	Help    string
	Allowed []string // for enumerations; nil when parse decides
	parse   func(string) (string, error)
}

// Defs lists every setting. Adding a setting is adding a line here.
func Defs() []Def {
	return append([]Def{
		{Key: SagaMode, Default: contracts.ModeChoreography, Allowed: []string{contracts.ModeChoreography, contracts.ModeOrchestration},
			Help: "how the checkout saga is coordinated: services reacting to events, or an orchestrator in orders sending commands"},
		{Key: SagaStepTimeout, Default: "15s", parse: durationBetween(time.Second, 10*time.Minute),
			Help: "orchestration: how long the orchestrator waits for a step's reply before compensating"},
		{Key: OutboxEnabled, Default: "true", parse: parseBool,
			Help: "write events in the same transaction as the change (off: publish after commit, the dual-write bug)"},
		{Key: InboxEnabled, Default: "true", parse: parseBool,
			Help: "record handled message ids and skip duplicates (off: a redelivered message applies twice)"},
		{Key: AMQPRetryDelays, Default: "250ms,1s,3s", parse: parseDelays,
			Help: "the delays of the retry queues a failed message goes through before the DLQ (1 to 5, each 10ms–10m)"},
		{Key: GatewayBreakerEnabled, Default: "true", parse: parseBool,
			Help: "a circuit breaker on every gateway upstream (off: every call goes through, however sick the upstream)"},
		{Key: GatewayBreakerFailures, Default: FromEnv, parse: orEnv(intBetween(1, 100)),
			Help: "consecutive failures (5xx or no answer) that open a gateway breaker; env: the gateway's BREAKER_FAILURES (5)"},
		{Key: GatewayBreakerOpenFor, Default: FromEnv, parse: orEnv(durationBetween(time.Second, 5*time.Minute)),
			Help: "how long an open gateway breaker answers 503 before letting one trial call through; env: BREAKER_OPEN_FOR (10s)"},
		{Key: GatewayRateLimitRPS, Default: FromEnv, parse: orEnv(floatBetween(0, 100_000)),
			Help: "requests per second each gateway client (user, else IP) may make, 429 + Retry-After beyond; 0: off; env: RATE_LIMIT_RPS (100)"},
		{Key: GatewayRateLimitBurst, Default: FromEnv, parse: orEnv(intBetween(0, 100_000)),
			Help: "requests a gateway client may make at once (its bucket's size); 0: one second's worth of rps; env: RATE_LIMIT_BURST (200)"},
		{Key: GatewayCacheTTL, Default: "0s", parse: durationBetween(0, time.Hour),
			Help: "how long each gateway instance keeps a product read (GET /api/v1/products, /products/{sku}) in memory and answers it without asking catalog; product.price_changed drops a product's copies at once; 0s: off"},
		{Key: HTTPTimeout, Default: FromEnv, parse: orEnv(durationBetween(50*time.Millisecond, 30*time.Second)),
			Help: "bound on every outbound HTTP call (gateway → upstreams, orders → catalog, notifications); env: each service's own (UPSTREAM_TIMEOUT 5s, CATALOG_TIMEOUT 2s)"},
		{Key: HTTPRetries, Default: FromEnv, parse: orEnv(intBetween(0, 5)),
			Help: "retries (exponential backoff + jitter) of a failed outbound call, only if idempotent (GET, HEAD, a POST with an Idempotency-Key); env: UPSTREAM_RETRIES 1 at the gateway, 0 elsewhere"},
		{Key: DBTopology, Default: TopologyPerService, Allowed: []string{TopologyPerService, TopologyShared},
			Help: "per-service: a database per service; shared: one database shop, and orders reads catalog's and inventory's tables with a SQL join (the coupling); applied by restarting every service (lab up does it, with progress)"},
		{Key: InventorySchema, Default: InventorySchemaV1, Allowed: []string{InventorySchemaV1, InventorySchemaV2},
			Help: "the schema change an inventory team ships on its own: v2 renames stock.on_hand to quantity (inventory's code follows); per-service checkout keeps working, shared checkout breaks until v1"},
		{Key: NotificationsMode, Default: NotifyAsync, Allowed: []string{NotifyAsync, NotifySync},
			Help: "async: notifications reacts to order.confirmed; sync: orders calls notifications over HTTP before it confirms an order (and retries the confirmation while notifications fails)"},
		{Key: ReadModel, Default: ReadModelComposition, Allowed: []string{ReadModelComposition, ReadModelCQRS},
			Help: "the order history (GET /api/v1/orders, /home): composition asks orders' write side; cqrs asks the read model orders keeps from events (lags behind: read_model_apply_lag_seconds)"},
		{Key: CatalogTransport, Default: TransportHTTP, Allowed: []string{TransportHTTP, TransportGRPC},
			Help: "how orders asks catalog for prices at checkout: http (GET /products/{sku}, JSON) or grpc (catalog.v1.Catalog/GetProduct, protobuf over HTTP/2 on catalog's GRPC_ADDR); read per call, bounded by http.timeout either way"},
		{Key: GatewayDiscovery, Default: DiscoveryStatic, Allowed: []string{DiscoveryStatic, DiscoveryRegistry},
			Help: "how the gateway finds catalog: static (CATALOG_URL, instance 1 only) or registry (the instances registered in the lab's service registry, health-checked on /readyz every second, requests round-robin across the healthy ones)"},
		{Key: StranglerRoutes, Default: defaultRoutes, parse: parseRoutes,
			Help: "the strangler fig: which side serves each gateway route family, family=services|monolith for users, products, orders (comma-separated; a family not named stays services), e.g. users=monolith,products=services,orders=monolith"},
	}, append(deployDefs(), scaleDefs()...)...)
}

// MaxScale bounds the scale.<service> settings: instance n listens on the service's
// port + 1000·(n-1), and a tenth would reach into other services' ranges. It is lab
// up's own bound (lab/stack.MaxScale; a test in lab/scaling keeps the two equal: the
// services never import lab).
const MaxScale = 9

// ScalePrefix begins the scale settings: scale.<service> is how many instances of a
// service lab up runs (ScaleKey).
const ScalePrefix = "scale."

// ScaleKey is the setting that scales service: "scale.shipping".
func ScaleKey(service string) string { return ScalePrefix + service }

// ScaleServices are the services a scale setting exists for: the queue consumers, the
// ones whose extra instances share the work (competing consumers on their queue), and
// catalog, whose extra instances the gateway finds in the service registry
// (gateway.discovery=registry). Another HTTP-only service would gain nothing: its
// callers know one URL, instance 1's.
var ScaleServices = append(slices.Clone(QueueServices), DiscoveredServices...)

// DiscoveredServices are the HTTP services the gateway can balance across through the
// service registry (gateway.discovery).
var DiscoveredServices = []string{"catalog"}

func scaleDefs() []Def {
	out := make([]Def, 0, len(ScaleServices))
	for _, svc := range ScaleServices {
		help := fmt.Sprintf("instances of %s that lab up runs, competing consumers on %s.events (1 to %d); applied live: lab up starts or stops instances (gracefully: what one held is redelivered)", svc, svc, MaxScale)
		if slices.Contains(DiscoveredServices, svc) {
			help = fmt.Sprintf("instances of %s that lab up runs (1 to %d), each registered in the service registry; the gateway uses them all only with gateway.discovery=registry; applied live", svc, MaxScale)
		}
		out = append(out, Def{Key: ScaleKey(svc), Default: "1", parse: intBetween(1, MaxScale), Help: help})
	}
	return out
}

// Scale is how many instances of service the lab should run (1 for a service with no
// scale setting, or an unreadable value).
func (s Settings) Scale(service string) int {
	if _, ok := Lookup(ScaleKey(service)); !ok {
		return 1
	}
	n, err := strconv.Atoi(s.Get(ScaleKey(service)))
	if err != nil || n < 1 {
		return 1
	}
	return min(n, MaxScale)
}

// Lookup returns the definition of key.
func Lookup(key string) (Def, bool) {
	for _, d := range Defs() {
		if d.Key == key {
			return d, true
		}
	}
	return Def{}, false
}

// Validate checks a value for key and returns it normalised ("TRUE" → "true").
func Validate(key, value string) (string, error) {
	d, ok := Lookup(key)
	if !ok {
		keys := make([]string, 0, len(Defs()))
		for _, d := range Defs() {
			keys = append(keys, d.Key)
		}
		return "", fmt.Errorf("unknown setting %q (known: %s)", key, strings.Join(keys, ", "))
	}
	value = strings.TrimSpace(value)
	if d.Allowed != nil {
		if !slices.Contains(d.Allowed, value) {
			return "", fmt.Errorf("bad value %q for %s: want one of %s", value, key, strings.Join(d.Allowed, ", "))
		}
		return value, nil
	}
	v, err := d.parse(value)
	if err != nil {
		return "", fmt.Errorf("bad value %q for %s: %v", value, key, err)
	}
	return v, nil
}

func parseBool(s string) (string, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return "", fmt.Errorf("want true or false")
	}
	return strconv.FormatBool(b), nil
}

func durationBetween(lo, hi time.Duration) func(string) (string, error) {
	return func(s string) (string, error) {
		d, err := time.ParseDuration(s)
		if err != nil || d < lo || d > hi {
			return "", fmt.Errorf("want a duration between %s and %s, like 15s", lo, hi)
		}
		return d.String(), nil
	}
}

func intBetween(lo, hi int) func(string) (string, error) {
	return func(s string) (string, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return "", fmt.Errorf("want a whole number from %d to %d", lo, hi)
		}
		return strconv.Itoa(n), nil
	}
}

func floatBetween(lo, hi float64) func(string) (string, error) {
	return func(s string) (string, error) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < lo || f > hi || f != f {
			return "", fmt.Errorf("want a number from %g to %g", lo, hi)
		}
		return strconv.FormatFloat(f, 'f', -1, 64), nil
	}
}

// orEnv accepts FromEnv besides what parse accepts.
func orEnv(parse func(string) (string, error)) func(string) (string, error) {
	return func(s string) (string, error) {
		if strings.EqualFold(s, FromEnv) {
			return FromEnv, nil
		}
		v, err := parse(s)
		if err != nil {
			return "", fmt.Errorf("%v, or %s for the service's own configuration", err, FromEnv)
		}
		return v, nil
	}
}

// Settings is one consistent snapshot of every setting (defaults filled in) and of the
// faults in force when it was read (FaultsFor filters out those expired since).
type Settings struct {
	Values   map[string]string
	Faults   []Fault
	Revision int64 // increases with every change; lets an instance ignore stale news
}

// Defaults is the snapshot of an untouched lab.
func Defaults() Settings {
	v := map[string]string{}
	for _, d := range Defs() {
		v[d.Key] = d.Default
	}
	return Settings{Values: v}
}

// Get returns a value (the default if unset).
func (s Settings) Get(key string) string {
	if v, ok := s.Values[key]; ok {
		return v
	}
	d, _ := Lookup(key)
	return d.Default
}

// SagaMode is the mode new checkouts start in.
func (s Settings) SagaMode() string { return s.Get(SagaMode) }

// Outbox reports whether events go through the outbox.
func (s Settings) Outbox() bool { return s.Get(OutboxEnabled) == "true" }

// Inbox reports whether consumers deduplicate.
func (s Settings) Inbox() bool { return s.Get(InboxEnabled) == "true" }

// StepTimeout is how long an orchestrated step may take.
func (s Settings) StepTimeout() time.Duration {
	d, err := time.ParseDuration(s.Get(SagaStepTimeout))
	if err != nil {
		return 15 * time.Second
	}
	return d
}

// BreakerEnabled reports whether the gateway's circuit breakers are on.
func (s Settings) BreakerEnabled() bool { return s.Get(GatewayBreakerEnabled) != "false" }

// BreakerFailures is the consecutive failures that open a breaker; ok false: the
// gateway's own configuration applies.
func (s Settings) BreakerFailures() (n int, ok bool) { return s.intValue(GatewayBreakerFailures) }

// BreakerOpenFor is how long a breaker stays open; ok false: the gateway's own.
func (s Settings) BreakerOpenFor() (d time.Duration, ok bool) {
	return s.durationValue(GatewayBreakerOpenFor)
}

// RateLimitRPS is each gateway client's refill rate (0: off); ok false: the gateway's own.
func (s Settings) RateLimitRPS() (rps float64, ok bool) {
	f, err := strconv.ParseFloat(s.Get(GatewayRateLimitRPS), 64)
	return f, err == nil
}

// RateLimitBurst is each gateway client's bucket size (0: one second's worth of the
// rate); ok false: the gateway's own.
func (s Settings) RateLimitBurst() (n int, ok bool) { return s.intValue(GatewayRateLimitBurst) }

// Discovery is how the gateway finds catalog's instances (DiscoveryStatic or
// DiscoveryRegistry).
func (s Settings) Discovery() string {
	if s.Get(GatewayDiscovery) == DiscoveryRegistry {
		return DiscoveryRegistry
	}
	return DiscoveryStatic
}

// CacheTTL is how long the gateway keeps a product read (0: no caching).
func (s Settings) CacheTTL() time.Duration {
	d, err := time.ParseDuration(s.Get(GatewayCacheTTL))
	if err != nil || d < 0 {
		return 0
	}
	return d
}

// HTTPTimeout bounds one outbound HTTP call (each attempt); ok false: the service's own.
func (s Settings) HTTPTimeout() (d time.Duration, ok bool) { return s.durationValue(HTTPTimeout) }

// HTTPRetries is how often a failed idempotent outbound call is retried; ok false: the
// service's own.
func (s Settings) HTTPRetries() (n int, ok bool) { return s.intValue(HTTPRetries) }

// NotifySync reports whether orders calls notifications before confirming an order.
func (s Settings) NotifySync() bool { return s.Get(NotificationsMode) == NotifySync }

// CatalogGRPC reports whether orders asks catalog over gRPC (catalog.transport=grpc).
func (s Settings) CatalogGRPC() bool { return s.Get(CatalogTransport) == TransportGRPC }

// CQRS reports whether the order history is served from the read model (read.model=cqrs).
func (s Settings) CQRS() bool { return s.Get(ReadModel) == ReadModelCQRS }

func (s Settings) intValue(key string) (int, bool) {
	n, err := strconv.Atoi(s.Get(key))
	return n, err == nil
}

func (s Settings) durationValue(key string) (time.Duration, bool) {
	d, err := time.ParseDuration(s.Get(key))
	return d, err == nil
}

// defaultRoutes: every family on the microservices, so the lab and every exercise that
// does not name strangler.routes run as before the monolith existed.
var defaultRoutes = "users=services,products=services,orders=services"

// parseRoutes reads strangler.routes: comma-separated family=side pairs, each family at
// most once; a family not named is on services. The value is normalised to name every
// family, in StranglerFamilies' order, so two spellings of one routing store alike.
func parseRoutes(s string) (string, error) {
	sides := map[string]string{}
	for _, f := range StranglerFamilies {
		sides[f] = RouteServices
	}
	seen := map[string]bool{}
	if strings.TrimSpace(s) != "" {
		for _, part := range strings.Split(s, ",") {
			family, side, ok := strings.Cut(strings.TrimSpace(part), "=")
			family, side = strings.TrimSpace(family), strings.TrimSpace(side)
			switch {
			case !ok:
				return "", fmt.Errorf("want family=side pairs separated by commas, like users=monolith,orders=services (got %q)", part)
			case !slices.Contains(StranglerFamilies, family):
				return "", fmt.Errorf("unknown route family %q: want %s", family, strings.Join(StranglerFamilies, ", "))
			case side != RouteServices && side != RouteMonolith:
				return "", fmt.Errorf("%s=%q: want %s or %s", family, side, RouteServices, RouteMonolith)
			case seen[family]:
				return "", fmt.Errorf("route family %s named twice", family)
			}
			seen[family], sides[family] = true, side
		}
	}
	out := make([]string, len(StranglerFamilies))
	for i, f := range StranglerFamilies {
		out[i] = f + "=" + sides[f]
	}
	return strings.Join(out, ","), nil
}

// Route is the side (RouteServices or RouteMonolith) that serves a route family under
// strangler.routes; anything unreadable is RouteServices, the default.
func (s Settings) Route(family string) string {
	for _, part := range strings.Split(s.Get(StranglerRoutes), ",") {
		if f, side, _ := strings.Cut(part, "="); f == family && side == RouteMonolith {
			return RouteMonolith
		}
	}
	return RouteServices
}

// AMQPRetryDelays is the setting that gives the retry delays (see RetryDelays).
const AMQPRetryDelays = "amqp.retry.delays"

// parseDelays reads 1 to 5 comma-separated durations of 10ms to 10m ("250ms, 1s,3s"
// → "250ms,1s,3s"). They need not increase: a lab may show a flat or shrinking policy.
func parseDelays(s string) (string, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 5 {
		return "", fmt.Errorf("want 1 to 5 comma-separated delays, like 250ms,1s,3s")
	}
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d < 10*time.Millisecond || d > 10*time.Minute {
			return "", fmt.Errorf("want 1 to 5 comma-separated delays between 10ms and 10m, like 250ms,1s,3s")
		}
		out = append(out, d.String())
	}
	return strings.Join(out, ","), nil
}

// RetryDelays are the delays of the retry queues before the DLQ (amqp.retry.delays).
func (s Settings) RetryDelays() []time.Duration {
	var out []time.Duration
	for _, p := range strings.Split(s.Get(AMQPRetryDelays), ",") {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return nil // unreadable: the queue's defaults
		}
		out = append(out, d)
	}
	return out
}
