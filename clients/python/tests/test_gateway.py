"""The client against a running gateway: GATEWAY_URL and GATEWAY_TOKEN name
it and a researcher with a live grant on the demo; GATEWAY_CREDENTIALS, when
set, is the demo's credentials file, for the other people. Skipped when
GATEWAY_URL is unset."""

import json
import os
import unittest
from datetime import datetime, timedelta, timezone

import gateway_client as gc
from gateway_client import Gateway

try:
    import pandas  # noqa: F401
except ImportError:  # pragma: no cover
    pandas = None

URL, TOKEN = os.environ.get("GATEWAY_URL"), os.environ.get("GATEWAY_TOKEN")
SEX = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"


def credentials():
    path = os.environ.get("GATEWAY_CREDENTIALS")
    if not path:
        raise unittest.SkipTest("GATEWAY_CREDENTIALS is unset")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@unittest.skipUnless(URL and TOKEN, "GATEWAY_URL and GATEWAY_TOKEN name no gateway")
class GatewayTest(unittest.TestCase):
    def setUp(self):
        self.gw = Gateway(URL, TOKEN)

    def test_datasets_and_budgets(self):
        names = [d["name"] for d in self.gw.datasets()]
        self.assertIn("demo_hospital", names)
        budgets = self.gw.budgets()
        self.assertTrue(budgets and budgets[0]["live"])
        self.assertIn("epsilon_remaining", budgets[0])

    @unittest.skipIf(pandas is None, "pandas is not installed")
    def test_query_frame(self):
        before = self.gw.budgets()[0]["epsilon_spent"]
        df = self.gw.query(SEX, epsilon=0.1)
        self.assertEqual(list(df.columns), ["sex", "n", "n_low", "n_high"])
        self.assertEqual(df["sex"].tolist(), ["F", "M"])
        self.assertEqual(str(df["n"].dtype), "int64")
        self.assertTrue(((df["n_low"] < df["n"]) & (df["n"] < df["n_high"])).all())
        a = df.attrs
        self.assertTrue(a["query_id"].startswith("qry_"))
        self.assertEqual(a["privacy"]["epsilon"], 0.1)
        self.assertIn("n", a["privacy"]["columns"])
        self.assertIsNotNone(a["receipt"])
        # The first ask spends 0.1; a repeat is the stored answer, free.
        if not a["cached"]:
            self.assertAlmostEqual(a["budget"]["epsilon_spent"], before + 0.1)
        again = self.gw.query(SEX, epsilon=0.1)
        self.assertTrue(again.attrs["cached"])
        self.assertEqual(again.attrs["query_id"], a["query_id"])
        self.assertEqual(again["n"].tolist(), df["n"].tolist())
        self.assertEqual(again.attrs["budget"]["epsilon_spent"], a["budget"]["epsilon_spent"])

    def test_answer_dict(self):
        ans = self.gw.answer("SELECT count(*) AS n FROM patients WHERE age < 0", epsilon=0.1)
        self.assertIsInstance(ans["rows"], list)
        self.assertIn("budget", ans)

    def test_rejected(self):
        with self.assertRaises(gc.QueryRejected) as cm:
            self.gw.query("SELECT patient_id FROM patients", epsilon=0.1)
        self.assertEqual(cm.exception.code, "query_rejected")
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("patient_id", cm.exception.message)
        self.assertIsInstance(cm.exception, gc.GatewayError)

    def test_invalid(self):
        with self.assertRaises(gc.InvalidRequest) as cm:
            self.gw.query("", epsilon=0.1)
        self.assertTrue(cm.exception.message)

    def test_estimate(self):
        spent = self.gw.budgets()[0]["epsilon_spent"]
        est = self.gw.estimate("SELECT age, count(*) AS n FROM patients GROUP BY age", epsilon=0.3)
        self.assertTrue(est["dry_run"])
        self.assertEqual(est["cost"]["epsilon"], 0.3)
        self.assertGreater(est["privacy"]["columns"]["n"]["noise_scale"], 0)
        self.assertEqual(self.gw.budgets()[0]["epsilon_spent"], spent)

    def test_unauthenticated(self):
        with self.assertRaises(gc.Unauthenticated) as cm:
            Gateway(URL, "gw_not_a_token").budgets()
        self.assertEqual(cm.exception.code, "unauthenticated")
        self.assertEqual(cm.exception.status, 401)

    def test_unreachable(self):
        with self.assertRaises(gc.Unavailable):
            Gateway("http://127.0.0.1:9", TOKEN, timeout=5).budgets()

    def test_not_found(self):
        with self.assertRaises(gc.NotFound):
            self.gw.access_request("req_does_not_exist")

    def test_request_access(self):
        until = datetime.now(timezone.utc) + timedelta(days=90)
        r = self.gw.request_access("demo_hospital", "length of stay by department", 1.0, until,
                                   processing_method="aggregate statistics")
        self.assertEqual(r["state"], "pending")
        self.assertEqual(self.gw.access_request(r["id"])["state"], "pending")
        self.assertIn(r["id"], [x["id"] for x in self.gw.access_requests()])
        with self.assertRaises(ValueError):
            self.gw.request_access("demo_hospital", "x", 1.0, datetime.now())

    def test_forbidden(self):
        c = credentials()
        with self.assertRaises(gc.Forbidden) as cm:
            Gateway(URL, c["tokens"]["researcher_overseas"]).query(SEX, epsilon=0.1)
        self.assertEqual(cm.exception.code, "forbidden")
        with self.assertRaises(gc.Forbidden):
            Gateway(URL, c["tokens"]["auditor"]).query(SEX, epsilon=0.1)

    def test_budget_exhausted(self):
        # More delta than the grant has left: refused before anything is
        # spent.
        spent = self.gw.budgets()[0]["epsilon_spent"]
        with self.assertRaises(gc.BudgetExhausted) as cm:
            self.gw.query("SELECT count(*) AS n FROM patients", epsilon=0.1, delta=1e-4)
        self.assertEqual(cm.exception.code, "budget_exhausted")
        self.assertEqual(cm.exception.status, 403)
        self.assertEqual(self.gw.budgets()[0]["epsilon_spent"], spent)

    def test_quota_exceeded(self):
        # The partner researcher belongs to another legal entity: a count
        # over every patient of the demo would provide far more than the
        # Article 11 line of 30% of the dataset.
        gw = Gateway(URL, credentials()["tokens"]["researcher"])
        with self.assertRaises(gc.QuotaExceeded) as cm:
            gw.query("SELECT count(*) AS n FROM patients", epsilon=0.1)
        self.assertEqual(cm.exception.code, "quota_exceeded")

    def test_from_env(self):
        gw = Gateway.from_env()
        self.assertEqual(gw.url, URL.rstrip("/"))


if __name__ == "__main__":
    unittest.main()
