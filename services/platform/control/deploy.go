package control

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The release settings of catalog (blue-green, canary): which second version runs, how
// the gateway splits catalog's traffic between the versions, and when it gives up on v2
// by itself. See docs/patterns/blue-green-and-canary.md.
const (
	DeployCatalogV2           = "deploy.catalog.v2"
	DeployCatalogWeights      = "deploy.catalog.weights"
	DeployCatalogCanaryMaxErr = "deploy.catalog.canary_max_error_rate"
)

// Values of deploy.catalog.v2: off runs no v2; good and bad run one instance of it
// (catalog-v2-1), bad with a bug that answers part of the product reads with 500.
const (
	V2Off  = "off"
	V2Good = "good"
	V2Bad  = "bad"
)

// Versions are the versions of catalog an instance can run (its VERSION), in the order
// a weights value lists them.
var Versions = []string{"v1", "v2"}

// WeightsAllV1 is every request to v1: the default, and what a canary rollback writes.
const WeightsAllV1 = "v1:100"

// Canary rollback's minimum sample: the gateway judges v2 only on at least
// CanaryMinSample of its answers within the last CanaryWindowSeconds, so that one
// unlucky error among three requests does not roll a release back.
const (
	CanaryMinSample     = 20
	CanaryWindowSeconds = 30
)

func deployDefs() []Def {
	return []Def{
		{Key: DeployCatalogV2, Default: V2Off, Allowed: []string{V2Off, V2Good, V2Bad},
			Help: "a second version of catalog next to v1: off, good (catalog-v2-1 runs v2, its products carry \"catalogVersion\":\"v2\") or bad (the same v2 with a bug: one product read in four answers 500); lab up starts or stops catalog-v2-1 live; it gets traffic only by deploy.catalog.weights"},
		{Key: DeployCatalogWeights, Default: WeightsAllV1, parse: parseWeights,
			Help: "how the gateway splits catalog's requests between versions, percent, like v1:90,v2:10 (a canary) or v1:0,v2:100 (blue-green, switched at once); weights other than v1:100 route through the service registry even at gateway.discovery=static; a version with no healthy instance gets none, its share goes to the other"},
		{Key: DeployCatalogCanaryMaxErr, Default: "0.1", parse: floatBetween(0, 1),
			Help: fmt.Sprintf("canary auto-rollback: when more than this fraction (0 to 1) of v2's answers in the last %d s are 5xx or missing, over at least %d of them, the gateway sets deploy.catalog.weights back to %s by itself (gateway_canary_rollbacks_total)", CanaryWindowSeconds, CanaryMinSample, WeightsAllV1)},
	}
}

// Weights is a split of traffic between versions, in percent, adding up to 100.
type Weights map[string]int

// String is the normalised value: the versions named, in Versions order ("v2:10,v1:90"
// is stored as v1:90,v2:10).
func (w Weights) String() string {
	var parts []string
	for _, v := range Versions {
		if n, ok := w[v]; ok {
			parts = append(parts, v+":"+strconv.Itoa(n))
		}
	}
	return strings.Join(parts, ",")
}

// ParseWeights reads a weights value: comma-separated version:percent pairs, versions
// from Versions, each once, whole percentages from 0 to 100 that add up to 100.
func ParseWeights(s string) (Weights, error) {
	w := Weights{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		v, n, ok := strings.Cut(part, ":")
		v = strings.TrimSpace(v)
		if !ok {
			return nil, fmt.Errorf("want version:percent pairs like v1:90,v2:10, not %q", part)
		}
		if !slices.Contains(Versions, v) {
			return nil, fmt.Errorf("unknown version %q (versions: %s)", v, strings.Join(Versions, ", "))
		}
		if _, dup := w[v]; dup {
			return nil, fmt.Errorf("%s named twice", v)
		}
		pct, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || pct < 0 || pct > 100 {
			return nil, fmt.Errorf("%s: want a whole percent from 0 to 100, not %q", v, strings.TrimSpace(n))
		}
		w[v] = pct
	}
	sum := 0
	for _, n := range w {
		sum += n
	}
	if sum != 100 {
		return nil, fmt.Errorf("weights add up to %d, want 100", sum)
	}
	return w, nil
}

func parseWeights(s string) (string, error) {
	w, err := ParseWeights(s)
	if err != nil {
		return "", err
	}
	return w.String(), nil
}

// CatalogWeights is the split of catalog's traffic between versions (all v1 if the
// stored value is unreadable, which Validate never lets in).
func (s Settings) CatalogWeights() Weights {
	w, err := ParseWeights(s.Get(DeployCatalogWeights))
	if err != nil {
		return Weights{"v1": 100}
	}
	return w
}

// CatalogV2 is deploy.catalog.v2: V2Off, V2Good or V2Bad.
func (s Settings) CatalogV2() string {
	switch v := s.Get(DeployCatalogV2); v {
	case V2Good, V2Bad:
		return v
	}
	return V2Off
}

// CanaryMaxErrorRate is the fraction of v2's failed answers above which the gateway
// rolls the canary back.
func (s Settings) CanaryMaxErrorRate() float64 {
	f, err := strconv.ParseFloat(s.Get(DeployCatalogCanaryMaxErr), 64)
	if err != nil || f < 0 || f > 1 {
		return 0.1
	}
	return f
}
