package pg_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"microlab/services/platform/pg"
	"microlab/services/platform/testenv"
)

// Two services' databases carried into one shared database and back: each gets a
// schema of its own (search_path in its URL puts its unqualified tables there), the
// reader may read the other's tables and not write them, a third role may not even
// connect, and every row, a renamed column's included, and every sequence's position
// survive the round trip.
func TestSharedDatabaseAndCopy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := testenv.AdminDatabaseURL()
	owner, reader, stranger := testenv.Name("t_cpo_"), testenv.Name("t_cpr_"), testenv.Name("t_cps_")
	ownerURL, _ := testenv.DB(t, owner), testenv.DB(t, reader)
	testenv.DB(t, stranger)
	shop := testenv.Name("t_shop_")
	t.Cleanup(func() { _ = pg.DropShared(context.Background(), admin, shop) })

	// The owner's own database: a table with a serial key and a renamed column.
	own := connect(t, ownerURL)
	exec(t, own, `CREATE TABLE stock (id bigserial PRIMARY KEY, sku text NOT NULL, on_hand int NOT NULL)`,
		`CREATE TABLE goose_db_version (id int)`, `INSERT INTO goose_db_version VALUES (7)`,
		`INSERT INTO stock (sku, on_hand) SELECT 'SKU-' || i, i FROM generate_series(1, 500) i`,
		`ALTER TABLE stock RENAME COLUMN on_hand TO quantity`)

	schemas := []pg.Schema{{Name: "inventory", Role: owner}, {Name: "orders", Role: reader}}
	reads := []pg.Read{{Role: reader, Schema: "inventory"}}
	for range 2 { // idempotent
		if err := pg.ProvisionShared(ctx, admin, shop, schemas, reads); err != nil {
			t.Fatal(err)
		}
	}
	sharedURL, _ := pg.URLFor(admin, owner, owner, shop)
	shared := connect(t, sharedURL+"?search_path=inventory")
	// The target as the service's migrations would leave it: the column not renamed.
	exec(t, shared, `CREATE TABLE stock (id bigserial PRIMARY KEY, sku text NOT NULL, on_hand int NOT NULL)`,
		`INSERT INTO stock (sku, on_hand) VALUES ('SEED', 1)`, `CREATE TABLE goose_db_version (id int)`)

	adminShop, _ := pg.URLFor(admin, user(t, admin), password(t, admin), shop)
	src, dst := connect(t, adminURLFor(t, owner)), connect(t, adminShop)
	res, err := pg.CopySchema(ctx, src, dst, "public", "inventory", "goose_db_version")
	if err != nil {
		t.Fatal(err)
	}
	if res.Tables != 1 || res.Rows != 500 || res.Sequences != 1 {
		t.Fatalf("copied %+v, want 1 table, 500 rows, 1 sequence", res)
	}
	var n, sum int
	if err := shared.QueryRow(ctx, `SELECT count(*), sum(on_hand) FROM stock`).Scan(&n, &sum); err != nil || n != 500 || sum != 500*501/2 {
		t.Fatalf("target has %d rows summing %d (%v)", n, sum, err)
	}
	var next int64
	if err := shared.QueryRow(ctx, `SELECT nextval('stock_id_seq')`).Scan(&next); err != nil || next != 501 {
		t.Fatalf("sequence continues at %d (%v), want 501", next, err)
	}
	if err := shared.QueryRow(ctx, `SELECT count(*) FROM goose_db_version`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("skipped table touched: %d rows (%v)", n, err)
	}

	// The reader reads inventory's table (the coupling), and cannot write it.
	readerURL, _ := pg.URLFor(admin, reader, reader, shop)
	rd := connect(t, readerURL+"?search_path=orders")
	if err := rd.QueryRow(ctx, `SELECT count(*) FROM inventory.stock`).Scan(&n); err != nil || n != 500 {
		t.Fatalf("reader sees %d rows (%v)", n, err)
	}
	if _, err := rd.Exec(ctx, `UPDATE inventory.stock SET on_hand = 0`); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("reader wrote another service's table: %v", err)
	}
	strangerURL, _ := pg.URLFor(admin, stranger, stranger, shop)
	if c, err := pgx.Connect(ctx, strangerURL); err == nil {
		c.Close(ctx)
		t.Fatal("a role without a schema in the shared database connected to it")
	}

	// And back, over rows the owner's database no longer has.
	exec(t, own, `DELETE FROM stock WHERE id > 10`)
	if _, err := pg.CopySchema(ctx, dst, src, "inventory", "public", "goose_db_version"); err != nil {
		t.Fatal(err)
	}
	if err := own.QueryRow(ctx, `SELECT count(*), sum(quantity) FROM stock`).Scan(&n, &sum); err != nil || n != 500 || sum != 500*501/2 {
		t.Fatalf("back home: %d rows summing %d (%v)", n, sum, err)
	}
	if err := own.QueryRow(ctx, `SELECT count(*) FROM goose_db_version`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("own goose table: %d rows (%v)", n, err)
	}

	// A table the target lacks is refused before anything is written.
	exec(t, own, `CREATE TABLE extra (id int)`)
	if _, err := pg.CopySchema(ctx, src, dst, "public", "inventory", "goose_db_version"); err == nil || !strings.Contains(err.Error(), "migrate the target first") {
		t.Fatalf("copy into a target without the table: %v", err)
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func user(t *testing.T, url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.User
}

func password(t *testing.T, url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Password
}

func adminURLFor(t *testing.T, db string) string {
	u, err := pg.URLFor(testenv.AdminDatabaseURL(), user(t, testenv.AdminDatabaseURL()), password(t, testenv.AdminDatabaseURL()), db)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
