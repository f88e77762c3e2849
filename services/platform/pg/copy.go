package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// CopyResult counts what CopySchema carried over.
type CopyResult struct {
	Tables    int
	Rows      int64
	Sequences int
}

// CopySchema replaces the data of every table of dstSchema (on dst) with the rows of the
// table of the same name in srcSchema (on src), and sets every sequence of dstSchema to
// its source's value, in ONE transaction on dst: a failure leaves the target as it was.
// Tables named in skip (the goose version tables: the target keeps its own record of
// the migrations it ran) are left alone.
//
// Both schemas must have been migrated to the same tables. Columns are matched by
// position, not by name, so a renamed column (inventory's schema-change demo) still
// copies; a different number of columns is an error. Rows are streamed (COPY … TO
// STDOUT into COPY … FROM STDIN), never held in memory. dst must be a superuser
// connection: foreign keys are not checked while copying (session_replication_role =
// replica), so tables may come in any order — the source was consistent, and so is its copy.
// Nobody may write either schema meanwhile (the services are stopped).
func CopySchema(ctx context.Context, src, dst *pgx.Conn, srcSchema, dstSchema string, skip ...string) (CopyResult, error) {
	var res CopyResult
	srcTables, err := tables(ctx, src, srcSchema)
	if err != nil {
		return res, fmt.Errorf("copy %s: list source tables: %w", srcSchema, err)
	}
	dstTables, err := tables(ctx, dst, dstSchema)
	if err != nil {
		return res, fmt.Errorf("copy %s: list target tables: %w", dstSchema, err)
	}
	srcTables = slices.DeleteFunc(srcTables, func(t string) bool { return slices.Contains(skip, t) })
	dstTables = slices.DeleteFunc(dstTables, func(t string) bool { return slices.Contains(skip, t) })
	for _, t := range srcTables {
		if !slices.Contains(dstTables, t) {
			return res, fmt.Errorf("copy %s.%s: no such table in %s (migrate the target first)", srcSchema, t, dstSchema)
		}
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("copy %s: begin: %w", dstSchema, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		return res, fmt.Errorf("copy %s: %w", dstSchema, err)
	}
	if len(dstTables) > 0 {
		names := make([]string, len(dstTables))
		for i, t := range dstTables {
			names[i] = pgx.Identifier{dstSchema, t}.Sanitize()
		}
		if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")); err != nil {
			return res, fmt.Errorf("copy %s: empty target: %w", dstSchema, err)
		}
	}
	for _, t := range srcTables {
		n, err := copyTable(ctx, src, tx.Conn(), srcSchema, dstSchema, t)
		if err != nil {
			return res, err
		}
		res.Tables++
		res.Rows += n
	}
	seqs, err := sequences(ctx, src, srcSchema)
	if err != nil {
		return res, fmt.Errorf("copy %s: list sequences: %w", srcSchema, err)
	}
	for _, s := range seqs {
		var last int64
		var called bool
		if err := src.QueryRow(ctx, fmt.Sprintf(`SELECT last_value, is_called FROM %s`, pgx.Identifier{srcSchema, s}.Sanitize())).Scan(&last, &called); err != nil {
			return res, fmt.Errorf("copy sequence %s.%s: %w", srcSchema, s, err)
		}
		if _, err := tx.Exec(ctx, `SELECT setval($1::regclass, $2, $3)`, pgx.Identifier{dstSchema, s}.Sanitize(), last, called); err != nil {
			return res, fmt.Errorf("copy sequence %s.%s: %w", dstSchema, s, err)
		}
		res.Sequences++
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("copy %s: commit: %w", dstSchema, err)
	}
	return res, nil
}

// copyTable streams one table's rows from src into dst (inside dst's transaction).
func copyTable(ctx context.Context, src, dst *pgx.Conn, srcSchema, dstSchema, table string) (int64, error) {
	sc, err := columns(ctx, src, srcSchema, table)
	if err != nil {
		return 0, fmt.Errorf("copy %s.%s: columns: %w", srcSchema, table, err)
	}
	dc, err := columns(ctx, dst, dstSchema, table)
	if err != nil {
		return 0, fmt.Errorf("copy %s.%s: columns: %w", dstSchema, table, err)
	}
	if len(sc) != len(dc) {
		return 0, fmt.Errorf("copy %s: %s has columns %v, %s has %v", table, srcSchema, sc, dstSchema, dc)
	}
	out := fmt.Sprintf(`COPY %s (%s) TO STDOUT (FORMAT binary)`, pgx.Identifier{srcSchema, table}.Sanitize(), idents(sc))
	in := fmt.Sprintf(`COPY %s (%s) FROM STDIN (FORMAT binary)`, pgx.Identifier{dstSchema, table}.Sanitize(), idents(dc))
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := src.PgConn().CopyTo(ctx, pw, out)
		pw.CloseWithError(err) // nil: EOF for the reader
		done <- err
	}()
	tag, inErr := dst.PgConn().CopyFrom(ctx, pr, in)
	pr.CloseWithError(errors.New("copy target gave up")) // unblocks the writer if the target failed first
	outErr := <-done
	if err := errors.Join(outErr, inErr); err != nil {
		return 0, fmt.Errorf("copy %s.%s → %s: %w", srcSchema, table, dstSchema, err)
	}
	return tag.RowsAffected(), nil
}

func idents(cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(out, ", ")
}

func tables(ctx context.Context, conn *pgx.Conn, schema string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func sequences(ctx context.Context, conn *pgx.Conn, schema string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT sequencename FROM pg_sequences WHERE schemaname = $1 ORDER BY sequencename`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// columns lists a table's stored columns in their order (generated columns are computed
// by the target itself, dropped ones are gone).
func columns(ctx context.Context, conn *pgx.Conn, schema, table string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, schema, table)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
