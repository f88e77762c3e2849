package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/observability"
	"microlab/services/contracts"
	"microlab/services/platform/bus"
	"microlab/services/platform/control"
)

// responseCache keeps catalog's answers to product reads (GET /products and
// /products/{sku}) in this gateway instance's memory for gateway.cache.ttl, so a hit is
// answered without a call to catalog: no span to catalog in its trace, only the
// attribute cache.hit=true on the gateway's own span.
//
// Freshness comes from two sides. The TTL bounds how stale an answer can be whatever
// happens; product.price_changed (catalog's event, see follow) drops a product's entries
// and the list at once, so a price change is seen at the next read instead of up to a
// TTL later. The event is the fast path, the TTL the safety net: an event missed while
// the gateway was disconnected is covered by the TTL, and by a flush on reconnect.
//
// It holds at most maxEntries answers and maxBytes of bodies, evicting the least
// recently used first (hashicorp/golang-lru's simplelru, guarded by mu: the byte count
// must move with the entries). A TTL change flushes everything: entries stored under the
// old TTL would otherwise outlive the new one.
//
// Only 200s are kept: a 404 cached for a SKU catalog adds later would hide it, and an
// error is never something to repeat.
type responseCache struct {
	ttl      func() time.Duration // gateway.cache.ttl, read at every request; 0: off
	maxBytes int
	now      func() time.Time

	mu      sync.Mutex
	entries *lru.LRU[string, cached]
	bytes   int
	lastTTL time.Duration
	// gen counts invalidations and flushes. A miss notes it before asking catalog and
	// stores the answer only if it has not moved: an answer read before a price change
	// but arriving after its event would otherwise be stored stale for a whole TTL.
	gen uint64

	requests *prometheus.CounterVec // result: hit, miss (nil in unit tests without telemetry)
}

type cached struct {
	body    []byte
	expires time.Time
}

const (
	defaultCacheEntries = 1_000   // a dozen products and a list; room for a bigger catalog
	defaultCacheBytes   = 8 << 20 // 8 MiB of bodies at most
	listKey             = "/products"
)

func newResponseCache(ttl func() time.Duration, tel *observability.Telemetry) *responseCache {
	c := &responseCache{ttl: ttl, maxBytes: defaultCacheBytes, now: time.Now}
	c.entries, _ = lru.NewLRU(defaultCacheEntries, func(_ string, v cached) { c.bytes -= len(v.body) })
	if tel != nil {
		c.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_cache_requests_total",
			Help: "Product reads the gateway's response cache answered (hit) or passed to catalog (miss); counted only while gateway.cache.ttl is on."},
			[]string{"result"})
		tel.Registry.MustRegister(c.requests)
		for _, r := range []string{"hit", "miss"} {
			c.requests.WithLabelValues(r) // both series exist from the start: a ratio needs both
		}
		tel.GaugeFunc(time.Second, func(context.Context) (map[string]float64, error) {
			n, b := c.size()
			return map[string]float64{"gateway_cache_entries": float64(n), "gateway_cache_bytes": float64(b)}, nil
		}, map[string]string{
			"gateway_cache_entries": "Answers held in the gateway's response cache.",
			"gateway_cache_bytes":   "Bytes of bodies held in the gateway's response cache.",
		})
	}
	return c
}

// on reports the TTL in force (0: caching off), flushing when it changed.
func (c *responseCache) on() time.Duration {
	ttl := c.ttl()
	c.mu.Lock()
	defer c.mu.Unlock()
	if ttl != c.lastTTL {
		c.entries.Purge()
		c.gen++
		c.lastTTL = ttl
	}
	return ttl
}

// generation is the count of invalidations so far (see gen).
func (c *responseCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *responseCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries.Get(key)
	if !ok {
		return nil, false
	}
	if !c.now().Before(e.expires) {
		c.entries.Remove(key)
		return nil, false
	}
	return e.body, true
}

// put stores an answer read from catalog since generation gen, unless something was
// invalidated meanwhile (the answer may predate the change).
func (c *responseCache) put(key string, body []byte, ttl time.Duration, gen uint64) {
	if len(body) > c.maxBytes/4 {
		return // one answer must not push out most of the others
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.entries.Remove(key) // its bytes leave through the eviction callback
	c.entries.Add(key, cached{body: body, expires: c.now().Add(ttl)})
	c.bytes += len(body)
	for c.bytes > c.maxBytes {
		c.entries.RemoveOldest()
	}
}

// invalidate drops what a price change of sku makes stale: the product and the list.
func (c *responseCache) invalidate(sku string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries.Remove(listKey + "/" + sku)
	c.entries.Remove(listKey)
	c.gen++
}

func (c *responseCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries.Purge()
	c.gen++
}

func (c *responseCache) size() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries.Len(), c.bytes
}

func (c *responseCache) count(result string) {
	if c.requests != nil {
		c.requests.WithLabelValues(result).Inc()
	}
}

// cachedGet answers a product read from the cache, or from catalog (storing a 200).
func (g *Gateway) cachedGet(w http.ResponseWriter, r *http.Request, path string) error {
	ctx := r.Context()
	// The products family's owner under strangler.routes (catalog or the monolith). One
	// cache for both: they serve the same seed catalog, and only catalog's prices change
	// (product.price_changed drops the copies either way).
	up := g.route(ctx, control.FamilyProducts)
	ttl := g.cache.on()
	if ttl <= 0 {
		return forward(ctx, w, up, request{Method: http.MethodGet, Path: path})
	}
	span := trace.SpanFromContext(ctx)
	if body, ok := g.cache.get(path); ok {
		g.cache.count("hit")
		span.SetAttributes(attribute.Bool("cache.hit", true))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Cache", "hit")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return nil
	}
	g.cache.count("miss")
	span.SetAttributes(attribute.Bool("cache.hit", false))
	gen := g.cache.generation()
	rep, err := up.call(ctx, request{Method: http.MethodGet, Path: path})
	if err != nil {
		return up.fail(ctx, err)
	}
	if rep.Status == http.StatusOK {
		g.cache.put(path, rep.Body, ttl, gen)
	}
	w.Header().Set("X-Cache", "miss")
	relay(w, rep)
	return nil
}

// follow keeps this instance's cache told of price changes until ctx ends: it consumes
// product.price_changed from shop.events through a queue of its own, gateway.cache.<instance>,
// exclusive to its connection and deleted with it.
//
// Why not a gateway.events queue like the other services' (competing consumers)? There,
// each message is handled by ONE instance, which is what a piece of work wants. Here
// every instance holds its own cache, so every instance must hear every change: a shared
// queue would invalidate one instance's cache and leave the others serving the old price.
// A queue per instance makes the exchange fan the event out to all of them. Nothing is
// lost by the queue vanishing with the instance: its cache vanishes too.
//
// The consumer auto-acks and has no retries or DLQ: dropping an entry cannot fail, and a
// message this instance never saw (it was disconnected) is answered by flushing the whole
// cache each time the subscription is (re)established.
func (g *Gateway) follow(ctx context.Context, conn *bus.Conn, instance string, tel *observability.Telemetry) error {
	queue := "gateway.cache." + instance
	return bus.Subscribe(ctx, conn, bus.Subscription{
		Queue: queue, Exchange: contracts.ExchangeEvents, Keys: []string{contracts.ProductPriceChanged},
		OnSubscribed: func(queue string) {
			g.cache.flush() // changes made while we were not listening are unknown: start afresh
			g.log.InfoContext(ctx, "cache invalidation: listening", "queue", queue)
		},
		OnLost: func(err error) {
			g.log.WarnContext(ctx, "cache invalidation: subscription lost, retrying", "queue", queue, "err", err)
		},
	}, func(ctx context.Context, d bus.Delivery) { g.handlePriceChanged(ctx, d, tel) })
}

// handlePriceChanged drops the entries a product.price_changed makes stale, in a consumer
// span that joins the trace of the request that changed the price.
func (g *Gateway) handlePriceChanged(ctx context.Context, d bus.Delivery, tel *observability.Telemetry) {
	if tel != nil {
		var span trace.Span
		ctx, span = tel.StartProcess(ctx, observability.Message{Type: d.Type, MessageID: d.MessageID,
			CorrelationID: d.CorrelationID, Exchange: d.Exchange, RoutingKey: d.RoutingKey, Queue: d.Queue,
			BodySize: len(d.Body), Attempt: d.Attempt}, d.Headers)
		defer span.End()
	}
	env, err := d.Envelope()
	var p contracts.ProductPriceChangedData
	if err == nil {
		err = env.DecodeData(&p)
	}
	if err != nil {
		// Unreadable, so we cannot tell which product: drop everything rather than
		// risk serving a price that changed.
		g.log.WarnContext(ctx, "cache invalidation: malformed message; flushing the cache", "err", err)
		g.cache.flush()
		return
	}
	g.cache.invalidate(p.SKU)
	g.log.InfoContext(ctx, "cache invalidated", "sku", p.SKU, "price_cents", p.PriceCents)
}
