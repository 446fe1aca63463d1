"""Build the demo shop database, ``manifests/data/shop.db``, deterministically.

Run ``uv run --frozen python actions/seed_shop.py`` to rebuild it; the file is
committed so the demo works on a fresh clone. The same seed always gives the
same rows: customers, products, orders (order 1042 is the one the README asks
about) and their items.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "manifests" / "data" / "shop.db"

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    city TEXT NOT NULL,
    joined_on TEXT NOT NULL
);
CREATE TABLE products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price REAL NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    status TEXT NOT NULL CHECK (status IN
        ('placed', 'paid', 'shipped', 'delivered', 'cancelled', 'returned')),
    placed_at TEXT NOT NULL,
    shipped_at TEXT,
    carrier TEXT,
    tracking_number TEXT,
    total REAL NOT NULL
);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id),
    sku TEXT NOT NULL REFERENCES products(sku),
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX orders_customer ON orders(customer_id);
"""

CUSTOMERS = [
    ("Alice Martin", "alice@example.com", "Paris"),
    ("Bob Nguyen", "bob@example.com", "Lyon"),
    ("Carla Rossi", "carla@example.com", "Milan"),
    ("Dmitri Ivanov", "dmitri@example.com", "Berlin"),
    ("Emma Schmidt", "emma@example.com", "Hamburg"),
    ("Farid Haddad", "farid@example.com", "Marseille"),
    ("Grace Kim", "grace@example.com", "London"),
    ("Hugo Lefebvre", "hugo@example.com", "Brussels"),
    ("Ines Costa", "ines@example.com", "Lisbon"),
    ("Jonas Berg", "jonas@example.com", "Oslo"),
    ("Keiko Tanaka", "keiko@example.com", "Amsterdam"),
    ("Liam O'Brien", "liam@example.com", "Dublin"),
]

PRODUCTS = [
    ("KB-101", "Mechanical keyboard", 89.0),
    ("MS-202", "Wireless mouse", 29.5),
    ("HD-303", "Noise-cancelling headphones", 199.0),
    ("CH-404", "USB-C charger 65W", 39.9),
    ("MN-505", "27-inch monitor", 249.0),
    ("WC-606", "HD webcam", 59.0),
    ("DK-707", "Laptop docking station", 129.0),
    ("CB-808", "USB-C cable 2m", 12.5),
    ("SP-909", "Bluetooth speaker", 74.0),
    ("ST-010", "Laptop stand", 34.0),
]

CARRIERS = ("DHL", "UPS", "La Poste", "DPD")
STATUSES = ("placed", "paid", "shipped", "delivered", "delivered", "cancelled", "returned")


def build(path: Path, seed: int = 42) -> None:
    """Create (or replace) the database at ``path`` with the demo rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    start = dt.date(2026, 9, 1)
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        for i, (name, email, city) in enumerate(CUSTOMERS, start=1):
            joined = start - dt.timedelta(days=30 * i)
            db.execute(
                "INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
                (i, name, email, city, joined.isoformat()),
            )
        db.executemany("INSERT INTO products VALUES (?, ?, ?)", PRODUCTS)
        for order_id in range(1001, 1061):
            customer = rng.randint(1, len(CUSTOMERS))
            status = rng.choice(STATUSES)
            if order_id == 1042:
                customer, status = 1, "shipped"
            placed = start + dt.timedelta(days=(order_id - 1001), hours=rng.randint(8, 20))
            items = rng.sample(PRODUCTS, rng.randint(1, 3))
            quantities = [rng.randint(1, 2) for _ in items]
            total = round(sum(p[2] * q for p, q in zip(items, quantities, strict=True)), 2)
            shipped_at = carrier = tracking = None
            if status in ("shipped", "delivered", "returned"):
                shipped_at = (placed + dt.timedelta(days=rng.randint(1, 3))).isoformat()
                carrier = rng.choice(CARRIERS)
                tracking = f"{carrier[:2].upper()}{rng.randint(10**9, 10**10 - 1)}"
            db.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order_id,
                    customer,
                    status,
                    placed.isoformat(),
                    shipped_at,
                    carrier,
                    tracking,
                    total,
                ),
            )
            db.executemany(
                "INSERT INTO order_items VALUES (?, ?, ?)",
                [(order_id, p[0], q) for p, q in zip(items, quantities, strict=True)],
            )
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")


def main() -> None:
    """Command line: ``seed_shop.py [PATH]`` (default ``manifests/data/shop.db``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    build(args.path, args.seed)
    print(f"wrote {args.path}")  # noqa: T201 - a command-line script reports what it wrote


if __name__ == "__main__":
    main()
