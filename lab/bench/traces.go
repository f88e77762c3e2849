package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// A checkout's trace, read back from the lab's Jaeger (/api/traces/{id}), as far as the
// cost of a checkout needs it.
type jaegerSpan struct {
	OperationName string `json:"operationName"`
	Tags          []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

func (s jaegerSpan) tag(keys ...string) string {
	for _, t := range s.Tags {
		for _, k := range keys {
			if t.Key == k {
				return fmt.Sprint(t.Value)
			}
		}
	}
	return ""
}

// spanCount is one trace's spans by what they are.
type spanCount struct {
	all, sql, statements, commits, publishes, deliveries, http int
}

// classify counts a trace's spans: SQL spans carry db.system (otelpgx), and those of a
// prepare are not statements of their own (the execute that follows is); messaging
// spans say their operation; HTTP spans their method.
func classify(spans []jaegerSpan) spanCount {
	var c spanCount
	for _, s := range spans {
		c.all++
		switch {
		case s.tag("db.system", "db.system.name") != "":
			c.sql++
			op := strings.ToLower(s.OperationName)
			if strings.HasPrefix(op, "prepare") {
				continue
			}
			c.statements++
			stmt := strings.ToLower(strings.TrimSpace(s.tag("db.statement", "db.query.text")))
			if stmt == "commit" || op == "commit" {
				c.commits++
			}
		case s.tag("messaging.system") != "":
			switch s.tag("span.kind") {
			case "producer":
				c.publishes++
			case "consumer":
				c.deliveries++
			default:
				switch s.tag("messaging.operation", "messaging.operation.type", "messaging.operation.name") {
				case "publish", "send":
					c.publishes++
				case "process", "receive", "deliver":
					c.deliveries++
				}
			}
		case s.tag("http.method", "http.request.method") != "":
			c.http++
		}
	}
	return c
}

// fetchTrace reads one trace's spans; a trace Jaeger does not have (yet) is no spans.
func fetchTrace(ctx context.Context, jaegerURL, traceID string) ([]jaegerSpan, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jaegerURL+"/api/traces/"+traceID, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Jaeger: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("Jaeger: GET /api/traces/%s: %s", traceID, resp.Status)
	}
	var body struct {
		Data []struct {
			Spans []jaegerSpan `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("Jaeger: trace %s: %w", traceID, err)
	}
	var out []jaegerSpan
	for _, d := range body.Data {
		out = append(out, d.Spans...)
	}
	return out, nil
}

// traceSpans reads the traces of ids and returns the mean counts. Spans reach Jaeger a
// few seconds after they end (the services' batch exporters), so the traces are read
// again, two seconds later, until no count grows.
func traceSpans(ctx context.Context, jaegerURL string, ids []string) (*Spans, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("no trace ids to read")
	}
	read := func() ([]spanCount, error) {
		out := make([]spanCount, 0, len(ids))
		for _, id := range ids {
			spans, err := fetchTrace(ctx, jaegerURL, id)
			if err != nil {
				return nil, err
			}
			out = append(out, classify(spans))
		}
		return out, nil
	}
	counts, err := read()
	if err != nil {
		return nil, err
	}
	for range 4 {
		if err := sleep(ctx, 2*time.Second); err != nil {
			return nil, err
		}
		again, err := read()
		if err != nil {
			return nil, err
		}
		same := true
		for i := range counts {
			same = same && again[i] == counts[i]
		}
		counts = again
		if same {
			break
		}
	}
	var sum spanCount
	out := &Spans{Source: "the SQL spans of the checkout's trace in Jaeger (otelpgx; a prepare is not a statement of its own)"}
	for _, c := range counts {
		if c.all == 0 {
			continue
		}
		if out.Traces == 0 || c.all < out.Min {
			out.Min = c.all
		}
		out.Max = max(out.Max, c.all)
		out.Traces++
		sum.all += c.all
		sum.sql += c.sql
		sum.statements += c.statements
		sum.commits += c.commits
		sum.publishes += c.publishes
		sum.deliveries += c.deliveries
		sum.http += c.http
	}
	if out.Traces == 0 {
		return nil, fmt.Errorf("Jaeger has none of the %d traces asked for", len(ids))
	}
	n := float64(out.Traces)
	out.Spans, out.SQL, out.Statements, out.Commits = float64(sum.all)/n, float64(sum.sql)/n, float64(sum.statements)/n, float64(sum.commits)/n
	out.Publishes, out.Deliveries, out.HTTP = float64(sum.publishes)/n, float64(sum.deliveries)/n, float64(sum.http)/n
	return out, nil
}
