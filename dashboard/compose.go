package main

import (
	"fmt"
	"strings"

	"microlab/services/platform/control"
)

// In the compose lab (DEPLOYMENT_ENVIRONMENT=compose) no `lab up` runs beside the
// services, and two of the lab's settings are applied by `lab up`, not by the services
// themselves. Compose stores them like any setting (the exercises read them) and the
// switchboard, and the control API's answer, say the commands that apply them:
//
//   - scale.<service>: natively lab up's scale follower starts and stops instances; in
//     compose that is `docker compose up --scale`.
//   - db.topology: natively lab up stops the services, moves every row into the other
//     topology and restarts them on it. A container could do that to its neighbours
//     only through the Docker socket, which a teaching lab should not hand to a web
//     page's backend; so the learner stops them, runs the compose lab's `topology` job
//     (`lab topology`, the same switch) and starts them again.

// composeMode reports whether the dashboard runs in the compose lab.
func (s *server) composeMode() bool { return s.cfg.Environment == "compose" }

// composeFile is how a learner names the compose file, from the repository's root.
const composeFile = "compose/docker-compose.yml"

// composeNote is what the learner must run for a setting compose stores but does not
// apply itself ("" for the others).
func composeNote(key, value string) string {
	if key == control.DBTopology {
		var data []string
		for _, s := range control.FaultServices {
			if s != "gateway" {
				data = append(data, s)
			}
		}
		return fmt.Sprintf("In the compose lab nothing moves the data for you: run "+
			"`docker compose -f %[1]s stop %[2]s`, then `docker compose -f %[1]s run --rm topology %[3]s`, "+
			"then `docker compose -f %[1]s up -d`", composeFile, strings.Join(data, " "), value)
	}
	service, ok := strings.CutPrefix(key, control.ScalePrefix)
	if !ok {
		return ""
	}
	return fmt.Sprintf("In the compose lab nothing starts instances for you: run `docker compose -f %s up -d --scale %s=%s`", composeFile, service, value)
}
