package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"microlab/lab/stack"
	"microlab/lab/topology"
	"microlab/services/platform/control"
)

// `lab topology [per-service|shared]` is the db.topology switch for a lab whose
// services are stopped: the compose lab's, where no `lab up` runs beside the
// containers to stop and restart them (natively `lab up` follows the setting itself).
// The learner stops the services, this moves their data (the same lab/topology Switcher
// `lab up` runs) and records where it is, and the next start puts them on it:
//
//	docker compose -f compose/docker-compose.yml stop users catalog orders payments inventory shipping notifications
//	docker compose -f compose/docker-compose.yml run --rm topology shared
//	docker compose -f compose/docker-compose.yml up -d
//
// In compose the services' database URLs are files in the secrets volume, written by
// compose/secrets/generate.sh at every `up`: this leaves the topology there
// (TopologyFile), and generate.sh writes the URLs for it.

// TopologyFile is where, in the secrets volume, `lab topology` leaves the topology the
// services' data is in, for compose/secrets/generate.sh.
const topologyFile = "state/topology"

func topologyCmd(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	if len(args) > 1 {
		return usageErrorf("want `lab topology [%s|%s]`, got %q", stack.TopologyPerService, stack.TopologyShared, args)
	}
	to := ""
	if len(args) == 1 {
		to = args[0]
		if to != stack.TopologyPerService && to != stack.TopologyShared {
			return usageErrorf("topology %q: want %s or %s", to, stack.TopologyPerService, stack.TopologyShared)
		}
	}
	sc := cfg.Stack()
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	if to == "" {
		st, err := store.Load(ctx)
		if err != nil {
			return err
		}
		to = st.Get(control.DBTopology)
	}
	root := cfg.MigrationsDir
	if root == "" {
		if root, err = moduleRoot(); err != nil {
			return fmt.Errorf("the services' migrations: %w (set LAB_MIGRATIONS_DIR)", err)
		}
	}
	from, err := topology.Where(ctx, sc)
	if err != nil {
		return err
	}
	sw := &topology.Switcher{Cfg: sc.WithTopology(from), Migrations: topology.DirMigrations(root),
		Services: stoppedServices{cfg: cfg},
		Progress: func(step string) { fmt.Fprintln(stdout, "lab:", step) }}
	if from == to {
		fmt.Fprintf(stdout, "lab: the data is on %s already\n", to)
	} else if err := sw.To(ctx, to); err != nil {
		return err
	}
	// The setting says what the data is on, for the dashboard and the exercises.
	if st, err := store.Load(ctx); err == nil && st.Get(control.DBTopology) != to {
		if _, err := store.Set(ctx, control.DBTopology, to, "lab topology"); err != nil {
			return err
		}
	}
	if cfg.SecretsDir != "" {
		fmt.Fprintln(stdout, "lab: start the services on it: docker compose -f compose/docker-compose.yml up -d")
	}
	return nil
}

// stoppedServices are the services of a lab that someone else stops and starts:
// Stop checks that they are stopped (nothing consumes their queues), Start leaves the
// new topology where the compose lab's next `up` reads it.
type stoppedServices struct{ cfg Config }

// Stopping says what Stop does here: it stops nothing, it checks.
func (s stoppedServices) Stopping(names []string) string {
	return fmt.Sprintf("checking that the %d services are stopped (nothing consumes their queues)", len(names))
}

func (s stoppedServices) Stop(ctx context.Context, names []string) error {
	running, err := consumers(ctx, s.cfg.AMQPURL, names)
	if err != nil {
		return err
	}
	if len(running) > 0 {
		sort.Strings(running)
		return fmt.Errorf("%s still running: stop them first (compose: docker compose -f compose/docker-compose.yml stop %s)",
			strings.Join(running, ", "), strings.Join(names, " "))
	}
	return nil
}

func (s stoppedServices) Start(_ context.Context, cfg stack.Config, _ []string) error {
	if s.cfg.SecretsDir == "" {
		return nil // natively, `lab up` starts them on the recorded topology
	}
	topo := stack.TopologyPerService
	if cfg.Shared() {
		topo = stack.TopologyShared
	}
	path := filepath.Join(s.cfg.SecretsDir, topologyFile)
	if err := os.WriteFile(path+".new", []byte(topo+"\n"), 0o644); err != nil {
		return fmt.Errorf("leave the topology for the next up: %w", err)
	}
	return os.Rename(path+".new", path)
}

// consumers returns the services among names whose queue (<service>.events) has a
// consumer: an instance still running. A service without a queue (catalog) has none.
func consumers(ctx context.Context, amqpURL string, names []string) ([]string, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second), Properties: amqp.Table{"connection_name": "lab-topology"}})
	if err != nil {
		return nil, fmt.Errorf("RabbitMQ (to see that the services are stopped): %w", err)
	}
	defer conn.Close()
	var running []string
	for _, name := range names {
		if dctx.Err() != nil {
			return nil, dctx.Err()
		}
		ch, err := conn.Channel()
		if err != nil {
			return nil, err
		}
		q, err := ch.QueueDeclarePassive(name+".events", true, false, false, false, nil)
		var ae *amqp.Error
		switch {
		case errors.As(err, &ae) && ae.Code == amqp.NotFound:
			continue // never declared: it never ran (the failed declare closed the channel)
		case err != nil:
			return nil, fmt.Errorf("queue %s.events: %w", name, err)
		}
		_ = ch.Close()
		if q.Consumers > 0 {
			running = append(running, name)
		}
	}
	return running, nil
}
