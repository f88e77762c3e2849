package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// The strangler fig (docs/patterns/monolith-and-strangler-fig.md): the gateway is the
// facade in front of two implementations of the same shop, the monolith and the
// microservices. strangler.routes says, per route family, which one serves it; moving a
// family is one setting, applied live, and no client notices, because both sides speak
// the same internal API. The gateway span says which side served (strangler.route) and
// each upstream span names the upstream it called (monolith, or users/catalog/orders).
//
// Data is the hard part of any such migration, and this lab keeps it visible rather than
// solving it: the monolith and the services keep separate databases, nothing copies rows
// between them, and the facade papers over the two seams a learner meets first:
//
//   - an order placed on one side and read after orders moved: GET /orders/{id} that the
//     current owner answers 404 is asked of the other side (the facade knows both);
//   - an account registered on one side logging in after users moved: a 401 from the
//     current owner is tried on the other side, and the home page's user part likewise.
//
// What it does not paper over (documented, on purpose): the order list shows only the
// current owner's orders, and an email can be registered once on each side.

// sides returns the upstream that serves a family on services, and the monolith.
func (g *Gateway) sides(family string) (services, monolith *upstream) {
	switch family {
	case control.FamilyUsers:
		services = g.users
	case control.FamilyProducts:
		services = g.catalog
	default:
		services = g.orders
	}
	return services, g.monolith
}

// owner is the upstream strangler.routes gives a family in settings. Without a monolith
// configured (MONOLITH_URL empty) every family stays on services.
func (g *Gateway) owner(s control.Settings, family string) *upstream {
	services, monolith := g.sides(family)
	if monolith != nil && s.Route(family) == control.RouteMonolith {
		return monolith
	}
	return services
}

// route returns the owner of family now and marks the gateway's span with the route
// taken (strangler.route = "orders=monolith"), so a trace says which side served even
// before its upstream span is opened.
func (g *Gateway) route(ctx context.Context, family string) *upstream {
	u := g.owner(g.knobs.settings(), family)
	markRoute(ctx, family+"="+side(u))
	return u
}

// routeAll returns the owners of the three families in one snapshot of the settings
// (the home page fans out to all of them), marking the span with all three.
func (g *Gateway) routeAll(ctx context.Context, s control.Settings) (users, orders, products *upstream) {
	users, orders, products = g.owner(s, control.FamilyUsers), g.owner(s, control.FamilyOrders), g.owner(s, control.FamilyProducts)
	markRoute(ctx, strings.Join([]string{
		control.FamilyUsers + "=" + side(users), control.FamilyProducts + "=" + side(products), control.FamilyOrders + "=" + side(orders)}, ","))
	return users, orders, products
}

func side(u *upstream) string {
	if u.name == "monolith" {
		return control.RouteMonolith
	}
	return control.RouteServices
}

func markRoute(ctx context.Context, route string) {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("strangler.route", route))
}

// other is the side of family that does not own it now (nil: there is no other side).
func (g *Gateway) other(family string, owner *upstream) *upstream {
	services, monolith := g.sides(family)
	if monolith == nil {
		return nil
	}
	if owner == monolith {
		return services
	}
	return monolith
}

// fallback sends rq to the owner of family; when it answers miss (404 for a read, 401
// for a login), the other side is asked, and its answer is relayed if it has one that is
// not miss too. Failures of either side are the gateway's usual 502/503/504 for that side.
func (g *Gateway) fallback(w http.ResponseWriter, r *http.Request, family string, rq request, miss int) error {
	ctx := r.Context()
	owner := g.route(ctx, family)
	rep, err := owner.call(ctx, rq)
	if err != nil {
		return owner.fail(ctx, err)
	}
	if rep.Status == miss {
		if alt := g.other(family, owner); alt != nil {
			if altRep, err := alt.call(ctx, rq); err == nil && altRep.Status != miss {
				trace.SpanFromContext(ctx).SetAttributes(attribute.String("strangler.fallback", alt.name))
				rep = altRep
			}
		}
	}
	relay(w, rep)
	return nil
}

// fetchUser is the home page's user part: the owner's answer, or on a 404 the other
// side's (the account may have been registered there).
func (g *Gateway) fetchUser(ctx context.Context, owner *upstream, id string) (json.RawMessage, error) {
	rq := request{Method: http.MethodGet, Path: "/users/" + url.PathEscape(id)}
	user, err := g.fetchJSON(ctx, owner, rq)
	if err == nil {
		return user, nil
	}
	if alt := g.other(control.FamilyUsers, owner); alt != nil && notFound(err) {
		if u, altErr := g.fetchJSON(ctx, alt, rq); altErr == nil {
			return u, nil
		}
	}
	return nil, err
}

// notFound reports whether err is fetchJSON's error for a 404 answer.
func notFound(err error) bool {
	var he *httpx.Error
	return errors.As(err, &he) && he.Status == http.StatusNotFound
}
