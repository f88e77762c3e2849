package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"microlab/services/platform/control"
	"microlab/services/platform/httpx"
)

// In the compose lab (DEPLOYMENT_ENVIRONMENT=compose) no `lab up` runs beside the
// services, and two of the lab's settings are applied by `lab up`, not by the services
// themselves:
//
//   - scale.<service>: natively lab up's scale follower starts and stops instances. In
//     compose that is `docker compose up --scale`, which the learner runs: the setting
//     is stored (exercise 15's check reads it) and the switchboard says the command.
//   - db.topology: natively lab up stops the services, moves every row into the other
//     topology and restarts them on it. A container cannot do that to its neighbours
//     without the Docker socket, which a teaching lab should not hand to a web page's
//     backend; so compose refuses the switch, saying where it works.

// composeMode reports whether the dashboard runs in the compose lab.
func (s *server) composeMode() bool { return s.cfg.Environment == "compose" }

// composeFile is how a learner names the compose file, from the repository's root.
const composeFile = "compose/docker-compose.yml"

// composeRefusal is why compose cannot apply a setting ("": it can).
func composeRefusal(key string) string {
	if key == control.DBTopology {
		return "db.topology cannot switch in the compose lab: moving the data means stopping and restarting every service, which only `lab up` does; run this in the native lab (go run ./lab up)."
	}
	return ""
}

// refuseInCompose is composeRefusal as the control API's answer: 409 not_in_compose.
func refuseInCompose(key string) error {
	if why := composeRefusal(key); why != "" {
		return httpx.Errorf(http.StatusConflict, "not_in_compose", "%s", why)
	}
	return nil
}

// composeNote is what the learner must run for a setting compose stores but does not
// apply itself ("" for the others).
func composeNote(key, value string) string {
	service, ok := strings.CutPrefix(key, control.ScalePrefix)
	if !ok {
		return ""
	}
	return fmt.Sprintf("In the compose lab nothing starts instances for you: run `docker compose -f %s up -d --scale %s=%s`", composeFile, service, value)
}

// composeSwitches is the control plane as the compose lab's exercises see it: the same
// Plane, refusing what compose cannot apply.
type composeSwitches struct{ *control.Plane }

func (c composeSwitches) Set(ctx context.Context, key, value, source string) (control.Change, error) {
	if err := refuseInCompose(key); err != nil {
		return control.Change{}, err
	}
	return c.Plane.Set(ctx, key, value, source)
}
