-- busted --helper: loaded once, before any spec file.
-- Preloads ffi and jit so that busted's per-file insulation never reloads
-- them (LuaJIT does not support reloading ffi), and makes
--   require "handlers.x", "lib.x", "permissions", "hooks"  -> lua/
--   require "spec.support.fake_gohub"                      -> the repo root
-- resolve from the repository root, whatever the current directory.

require "ffi"
require "jit"

local source = debug.getinfo(1, "S").source
local root = source:match("^@(.*)/spec/busted_helper%.lua$") or "."

local prefix = root .. "/lua/?.lua;" .. root .. "/?.lua;"
if package.path:sub(1, #prefix) ~= prefix then
  package.path = prefix .. package.path
end
