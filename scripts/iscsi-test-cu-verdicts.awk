# Turns iscsi-test-cu's verbose CUnit output into one line per test: "Suite.Test passed|FAILED".
# A test's verdict is the first "passed" or "FAILED" at the start of a line or right after "Test: NAME ...";
# "[FAILED]" inside a test's own messages is not a verdict (CUnit prints its verdict after them).
/^Suite: / { suite = $2; next }
match($0, /^  Test: [^ ]+ \.\.\./) {
  if (name != "") print name, verdict
  name = suite "." $2; verdict = ""
  rest = substr($0, RLENGTH + 1)
  if (match(rest, /^(passed|FAILED)/)) verdict = substr(rest, 1, RLENGTH)
  next
}
name != "" && verdict == "" && match($0, /^(passed|FAILED)/) { verdict = substr($0, 1, RLENGTH) }
/^Run Summary:/ { if (name != "") print name, verdict; name = "" }
