# SPDX-License-Identifier: Apache-2.0
# Prints each test's verdict as it lands and, before the tests start, what the suite's setup
# is doing (one line per new message: the suite polls every 100 ms and logs each poll).
foreach inputs as $e ({key: null, out: null};
  if $e.Test != null and ($e.Test | split("/") | length) == 2 and ($e.Action == "pass" or $e.Action == "fail" or $e.Action == "skip") then
    .out = "[conformance] \($e.Action) \($e.Test | split("/")[1])\(if $e.Elapsed then " (\($e.Elapsed)s)" else "" end)"
  elif $e.Test == "TestConformance" and $e.Action == "output" then
    ($e.Output | sub("^\\s*[\\w.-]+\\.go:[0-9]+: "; "") | sub("^[0-9TZ:.-]+: "; "") | sub("\\s+$"; "")) as $m
    | ($m | gsub("[0-9]+"; "#") | .[0:80]) as $k
    | if $m == "" or $k == .key then .out = null else .key = $k | .out = "[conformance] setup: \($m | .[0:200])" end
  else .out = null end;
  .out // empty)
