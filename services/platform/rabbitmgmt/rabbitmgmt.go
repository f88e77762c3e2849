// Package rabbitmgmt is a small client of RabbitMQ's management HTTP API (the
// rabbitmq_management plugin, port 15672): what the services' AMQP connections cannot
// do or see — create and delete a vhost, list queues with their depths, peek at a
// dead-letter queue without taking its messages, read a vhost's message counters.
//
// The dashboard (its DLQ page), lab bench (private vhosts, the cost of a checkout) and
// the tests (testenv: a vhost per test, bindings) all call it; the calls are the
// callers' own, this is only the one way of making one. No service uses it: a service
// talks AMQP, and the management API is the operator's view of the broker.
package rabbitmgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"microlab/services/platform/config"
)

// ErrNotFound is a 404: no such vhost, queue or exchange (or not declared yet).
// A StatusError of 404 matches it with errors.Is.
var ErrNotFound = errors.New("not found")

// StatusError is an answer other than 2xx.
type StatusError struct {
	Method, Path string
	Code         int    // 404
	Status       string // "404 Not Found"
	Body         string // the start of the answer's body, trimmed: the API says why
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("RabbitMQ management API: %s %s: %s %s", e.Method, e.Path, e.Status, e.Body)
}

// Is makes a 404 ErrNotFound.
func (e *StatusError) Is(target error) bool {
	return target == ErrNotFound && e.Code == http.StatusNotFound
}

// UnreachableError is a call that got no answer (nothing listens, a timeout, ...).
type UnreachableError struct {
	URL string // the API's, password masked
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("RabbitMQ management API unreachable at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Client calls the API of one broker as one user.
type Client struct {
	base       string // without credentials
	shown      string // the URL with its password masked, for messages
	user, pass string
	http       *http.Client
}

// New takes the API's URL with the user's credentials in it
// (http://guest:guest@127.0.0.1:15672) and the HTTP client to call it with (its
// Timeout bounds a call that ctx does not).
func New(rawURL string, c *http.Client) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("management API URL %q: want http://user:pass@host:15672", config.MaskURL(rawURL))
	}
	cl := &Client{shown: config.MaskURL(rawURL), http: c}
	if u.User != nil {
		cl.user = u.User.Username()
		cl.pass, _ = u.User.Password()
	}
	u.User = nil
	cl.base = strings.TrimRight(u.String(), "/")
	return cl, nil
}

// Base is the API's URL without credentials.
func (c *Client) Base() string { return c.base }

// Shown is the API's URL with its password masked, for messages.
func (c *Client) Shown() string { return c.shown }

// User is the user the client calls as (the one a new vhost grants permissions to).
func (c *Client) User() string { return c.user }

// maxAnswer bounds a decoded answer: a queue listing of a big broker, not a runaway.
const maxAnswer = 32 << 20

// Do calls method path (path starts with /api/; its vhost and names already
// url.PathEscape'd) with body as JSON (nil: none) and, with out, decodes the JSON
// answer into out. An answer other than 2xx is a *StatusError (a 404 is ErrNotFound);
// no answer at all is an *UnreachableError.
func (c *Client) Do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return &UnreachableError{URL: c.shown, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &StatusError{Method: method, Path: path, Code: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out)
}
