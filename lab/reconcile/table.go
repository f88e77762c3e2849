package reconcile

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Labels of the table's rows, one per figure (a script or test reads a figure by its
// label: "orders lost  0").
const (
	LabelPlaced     = "orders placed"
	LabelInDB       = "orders in the database"
	LabelFinal      = "orders final"
	LabelDLQ        = "messages in DLQs"
	maxFindingsShow = 20
)

// Label is the table's row label of a kind of anomaly.
func Label(k Kind) string {
	switch k {
	case Lost:
		return "orders lost"
	case DoubleCharge:
		return "double charges"
	case DoubleReservation:
		return "double reservations"
	case Unreleased:
		return "unreleased reservations"
	case MissingRefund:
		return "missing refunds"
	default:
		return "ledger mismatches"
	}
}

// Table writes the report for a terminal: one figure per row, the first findings of
// each kind, and a verdict.
func (r *Report) Table(w io.Writer) {
	from := "the orders, payments and inventory databases"
	if r.DLQChecked() {
		from += ", and the DLQs of vhost " + r.VHost
	}
	fmt.Fprintf(w, "reconciliation at %s: %s\n", r.At.Local().Format(time.TimeOnly), from)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	placedHow := "accepted by the gateway"
	if r.Accepted < 0 {
		placedHow = "in the orders database (the gateway's answers were not collected)"
	}
	fmt.Fprintf(tw, "  %s\t%6d\t%s\n", LabelPlaced, r.Placed(), placedHow)
	fmt.Fprintf(tw, "  %s\t%6d\t\n", LabelInDB, r.InDatabase)
	fmt.Fprintf(tw, "  %s\t%6d\t%d confirmed, %d cancelled, %d pending\n", LabelFinal, r.Final(), r.Confirmed, r.Cancelled, r.Pending)
	for _, k := range Kinds {
		fmt.Fprintf(tw, "  %s\t%6d\t%s\n", Label(k), r.Count(k), explain(k))
	}
	if r.DLQChecked() {
		fmt.Fprintf(tw, "  %s\t%6d\t%s\n", LabelDLQ, r.DLQMessages(), r.dlqDetail())
	} else {
		fmt.Fprintf(tw, "  %s\t%6s\tnot inspected (no management API)\n", LabelDLQ, "-")
	}
	tw.Flush()
	shown := 0
	for _, f := range r.Findings {
		if shown == maxFindingsShow {
			fmt.Fprintf(w, "  … and %d more findings\n", len(r.Findings)-shown)
			break
		}
		fmt.Fprintf(w, "  - %s\n", f)
		shown++
	}
	if r.Clean() {
		fmt.Fprintln(w, "verdict: clean: every order placed is final, nothing charged or reserved twice, nothing held for a cancelled order, no message dead-lettered")
		return
	}
	var bad []string
	for _, k := range Kinds {
		if n := r.Count(k); n > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", n, Label(k)))
		}
	}
	if n := r.DLQMessages(); n > 0 {
		bad = append(bad, fmt.Sprintf("%d %s", n, LabelDLQ))
	}
	fmt.Fprintf(w, "verdict: NOT clean: %s\n", strings.Join(bad, ", "))
}

func explain(k Kind) string {
	switch k {
	case Lost:
		return "accepted, and not final after recovery (or not in the orders database)"
	case DoubleCharge:
		return "authorized or captured twice, captured though cancelled, or not the total"
	case DoubleReservation:
		return "a SKU reserved more often than the order has lines of it"
	case Unreleased:
		return "stock still held for a cancelled order"
	case MissingRefund:
		return "a cancelled order's authorization not refunded in full"
	default:
		return "any other disagreement (e.g. confirmed, never captured)"
	}
}

func (r *Report) dlqDetail() string {
	names := make([]string, 0, len(r.DLQ))
	for q := range r.DLQ {
		names = append(names, q)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names))
	for _, q := range names {
		p := fmt.Sprintf("%s %d", q, r.DLQ[q])
		if b := r.DLQBefore[q]; b > 0 {
			p += fmt.Sprintf(" (%d before)", b)
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "no DLQ declared in the vhost"
	}
	return strings.Join(parts, ", ")
}
