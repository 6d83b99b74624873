"""Native unit tests of the decision: `python3 -m unittest` (no host needed)."""

import unittest

from guard import parse_config, refused_agent


class GuardTest(unittest.TestCase):
    def test_a_listed_agent_is_refused_whatever_its_case(self):
        config = parse_config('{"deny_agents": ["python-requests", "Bot"]}')
        self.assertEqual(refused_agent(config, "python-requests/2.31"), "python-requests")
        self.assertEqual(refused_agent(config, "Mozilla/5.0 (compatible; GoogleBOT/2.1)"), "bot")
        self.assertIsNone(refused_agent(config, "Mozilla/5.0 Firefox/120.0"))
        self.assertIsNone(refused_agent(config, None))

    def test_bad_configs_name_the_key(self):
        for text, key in [('{"deny": []}', "unknown key `deny`"), ('{"deny_agents": [""]}', "deny_agents"),
                          ('{"tag_header": "X Tag"}', "tag_header")]:
            with self.assertRaises(ValueError) as caught:
                parse_config(text)
            self.assertIn(key, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
