-- Connection and room hooks, called by the server with the client table.
-- Every hook is optional; an error in a hook is logged and otherwise
-- ignored. These defaults do nothing.

local M = {}


-- on_connect(client): a connection was accepted; none of its messages has
-- been handled yet. Return nothing to accept it, or false, close_code,
-- reason to refuse it (closed with close_code, 1008 when it is nil). It is
-- left undefined here on purpose: defining it builds every connection's
-- client table as it opens (~0.8 KB each), which idle connections otherwise
-- never pay. To use it:
--
--   function M.on_connect(client)
--     if not client.authenticated then
--       return false, 1008, "login required"
--     end
--   end


-- The connection closed with the WebSocket close code `code`.
function M.on_disconnect(client, code) -- luacheck: no unused args
end


-- client joined room_id.
function M.on_join(client, room_id) -- luacheck: no unused args
end


-- client left room_id.
function M.on_leave(client, room_id) -- luacheck: no unused args
end


return M
