package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// RabbitMQ's management plugin (its HTTP API: the tests' vhosts, the dashboard's queue
// view) and its Prometheus plugin are off on a fresh install (Debian's
// rabbitmq-server), and enabling them is one command on the machine running the
// broker. So lab up runs that command itself when it can, as scripts/deps.sh does, and
// lab doctor says whether it will; both decide with pluginsFix.

// rabbitPlugins are the plugins lab needs, in the order rabbitmq-plugins is given them.
var rabbitPlugins = []string{"rabbitmq_management", "rabbitmq_prometheus"}

const (
	pluginsRunTimeout  = time.Minute // rabbitmq-plugins itself: seconds
	pluginsWaitTimeout = time.Minute // then until both plugins' ports answer
)

// Checks pluginsFix's plan applies to: ensurePlugins enables the plugins when either
// fails.
const (
	nameRabbit     = "rabbitmq"
	nameManagement = "rabbitmq-management"
	nameRabbitProm = "rabbitmq-prometheus"
)

// pluginsPlan is how the plugins get enabled: the command (for people, and argv for
// lab up to run), and why lab up cannot run it itself ("" when it can).
type pluginsPlan struct {
	command string
	argv    []string
	env     []string // added to lab's environment for argv
	cannot  string
}

// pluginsFix decides how the plugins can be enabled for cfg's broker: by lab up itself
// when the broker is on this machine and rabbitmq-plugins is installed here (as root,
// or through sudo without a password prompt, as scripts/deps.sh runs it), else by the
// user. RABBITMQ_NODENAME and RABBITMQ_ENABLED_PLUGINS_FILE, when set, go to
// rabbitmq-plugins too.
func pluginsFix(cfg Config) pluginsPlan {
	var vars []string
	if cfg.RabbitNode != "" {
		vars = append(vars, "RABBITMQ_NODENAME="+cfg.RabbitNode)
	}
	if cfg.RabbitPluginsFile != "" {
		vars = append(vars, "RABBITMQ_ENABLED_PLUGINS_FILE="+cfg.RabbitPluginsFile)
	}
	args := slices.Concat([]string{"enable"}, rabbitPlugins)
	root := os.Geteuid() == 0
	p := pluginsPlan{command: strings.Join(slices.Concat(vars, []string{"rabbitmq-plugins"}, args), " ")}
	if !root && len(vars) > 0 {
		p.command = "sudo env " + p.command // sudo would drop the variables
	} else if !root {
		p.command = "sudo " + p.command
	}
	for _, u := range []struct{ name, raw string }{{"AMQP_URL", cfg.AMQPURL}, {"RABBITMQ_MANAGEMENT_URL", cfg.ManagementURL}} {
		if err := onThisMachine(u.raw); err != nil {
			p.cannot = fmt.Sprintf("run it where the broker runs: %s: %v", u.name, err)
			return p
		}
	}
	// Debian installs RabbitMQ's tools in /usr/sbin, which a user's PATH often lacks.
	bin, err := lookPath("rabbitmq-plugins", "/usr/sbin/rabbitmq-plugins")
	if err != nil {
		p.cannot = "rabbitmq-plugins is not installed here"
		return p
	}
	switch {
	case root:
		p.argv, p.env = slices.Concat([]string{bin}, args), vars
	default:
		sudo, err := lookPath("sudo")
		if err != nil {
			p.cannot = "run it as root (no sudo here)"
			return p
		}
		// -n: never a password prompt in the middle of lab up's output; without
		// passwordless sudo it fails, and the user runs the command.
		p.argv = slices.Concat([]string{sudo, "-n", "env"}, vars, []string{bin}, args)
	}
	return p
}

// fix is what doctor prints after a missing plugin: the command, and whether lab up
// runs it.
func (p pluginsPlan) fix() string {
	if p.cannot != "" {
		return p.command + "   (" + p.cannot + ")"
	}
	return p.command + pluginsRunByUp
}

const pluginsRunByUp = "   (lab up runs it)"

// ensurePlugins enables the management and Prometheus plugins when either does not
// answer although the broker does, printing one line on out when it starts and one
// when both answer (within pluginsWaitTimeout). cs are the checks of checks(): the
// broker and the two plugins are checked by them, as doctor checks them.
//
// When the management API stays unanswered (lab up cannot enable the plugins, or
// enabling them failed), the error is its check's one line, as doctor prints it, naming
// the command to run. When only the Prometheus endpoint does, lab goes on without
// RabbitMQ's metrics: without says so. With the broker down it does nothing: the
// dependency checks after it say so.
func ensurePlugins(ctx context.Context, cfg Config, cs []check, out io.Writer) (without string, err error) {
	var picked []check
	for _, name := range []string{nameRabbit, nameManagement, nameRabbitProm} {
		for _, c := range cs {
			if c.name == name {
				picked = append(picked, c)
			}
		}
	}
	if len(picked) != 3 {
		return "", errors.New("rabbitmq checks missing") // a programming error: checks() lists them
	}
	rs := runChecks(ctx, picked)
	if rs[0].err != nil || rs[1].err == nil && rs[2].err == nil {
		return "", nil
	}
	// what is left unanswered, once lab up has done what it can
	unanswered := func(rs []result, cause error) (string, error) {
		mgmt, prom := rs[0], rs[1]
		if mgmt.err != nil {
			if cause != nil {
				mgmt.err = cause
				mgmt.fix = strings.TrimSuffix(mgmt.fix, pluginsRunByUp)
			}
			return "", pluginError{mgmt}
		}
		if prom.err != nil {
			return fmt.Sprintf("RabbitMQ's metrics (%s; fix: %s): Prometheus does not scrape the broker", oneLine(prom.err), strings.TrimSuffix(prom.fix, pluginsRunByUp)), nil
		}
		return "", nil
	}
	failing := rs[2].name
	if rs[1].err != nil {
		failing = rs[1].name
	}
	plan := pluginsFix(cfg)
	if plan.cannot != "" {
		return unanswered(rs[1:], nil)
	}
	fmt.Fprintf(out, "rabbitmq: %s does not answer: enabling RabbitMQ's management and Prometheus plugins (once per machine): %s\n", failing, plan.command)
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, pluginsRunTimeout)
	cmd := exec.CommandContext(rctx, plan.argv[0], plan.argv[1:]...)
	cmd.Env = append(os.Environ(), plan.env...)
	output, err := cmd.CombinedOutput()
	cancel()
	if err != nil {
		return unanswered(rs[1:], fmt.Errorf("%s: %w: %s", plan.command, err, lastLine(output)))
	}
	deadline := time.Now().Add(pluginsWaitTimeout)
	for {
		rs = runChecks(ctx, picked[1:])
		if rs[0].err == nil && rs[1].err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if rs[0].err != nil {
				rs[0].err = fmt.Errorf("enabled, but after %s: %w", pluginsWaitTimeout, rs[0].err)
			}
			return unanswered(rs, rs[0].err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	fmt.Fprintf(out, "rabbitmq: plugins enabled in %s: the management API and the Prometheus endpoint answer\n", time.Since(start).Round(100*time.Millisecond))
	return "", nil
}

// pluginError is the management check failing, as doctor prints it: one line with the
// command that fixes it.
type pluginError struct{ r result }

func (e pluginError) Error() string { return e.r.line() }

// lastLine is the last non-empty line of a command's output (the error, for RabbitMQ's
// tools), at most 300 bytes.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 300 {
		l = l[:300] + "…"
	}
	return l
}
