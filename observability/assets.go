package observability

import (
	"embed"
	"io/fs"
)

// The Prometheus and Grafana assets are embedded so that `lab up` (and the tests) use
// exactly the files committed here, wherever the binary runs from.
//
//go:embed prometheus/*.yml prometheus/*.json prometheus/rules/*.yml prometheus/tests/*.yml grafana
var assets embed.FS

// Assets is observability/ as committed: prometheus/… (scrape configs, rules) and
// grafana/… (provisioning, dashboards).
func Assets() fs.FS { return assets }
