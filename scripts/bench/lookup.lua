-- lookup {key} -> found {value}: the bench's custom handler (a table lookup
-- and a reply). The table is built once, when the module loads. make bench
-- (run.sh) and tests/integration/test_bench_tool.py install it.
local M = {}

local t = {}
for i = 1, 1000 do
  t["k" .. i] = i
end

function M.handle(client, data)
  return "found", { value = t[data.key] }
end

return M
