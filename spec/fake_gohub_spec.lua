-- The fake gohub is shipped for users' specs: check the behaviour they rely on.

local fake = require "spec.support.fake_gohub"

describe("fake gohub", function()
  before_each(function()
    fake.reset()
  end)

  describe("clients", function()
    it("gives anonymous clients the anonymous permissions", function()
      local c = fake.add_client()
      assert.equal("anon-" .. c.id, c.user_id)
      assert.is_false(c.authenticated)
      assert.same({ "join:room", "leave:room", "send:message", "create:room" },
                  c.permissions)
    end)

    it("refuses a duplicate client id", function()
      fake.add_client { id = "c1" }
      assert.has_error(function() fake.add_client { id = "c1" } end)
    end)

    it("runs on_connect and honours a refusal", function()
      fake.set_hooks({ on_connect = function() return false, 4000, "no" end })
      local client, code, reason = fake.add_client { id = "c1" }
      assert.is_nil(client)
      assert.equal(4000, code)
      assert.equal("no", reason)
    end)
  end)

  describe("rooms", function()
    before_each(function()
      fake.add_client { id = "c1", user_id = "alice" }
      fake.add_client { id = "c2", user_id = "bob" }
    end)

    it("auto-creates a room on join", function()
      assert.equal(1, fake.rooms.join("c1", "r"))
      assert.same({ id = "r", name = "r", max_clients = 0, member_count = 1 },
                  fake.rooms.get("r"))
    end)

    it("deletes an auto-created room when its last member leaves", function()
      fake.rooms.join("c1", "r")
      fake.rooms.leave("c1", "r")
      assert.is_nil(fake.rooms.get("r"))
    end)

    it("keeps an explicit room when its last member leaves", function()
      fake.rooms.create("r")
      fake.rooms.join("c1", "r")
      fake.rooms.leave("c1", "r")
      assert.is_table(fake.rooms.get("r"))
    end)

    it("sends member_joined to the other members", function()
      fake.rooms.join("c1", "r")
      fake.rooms.join("c2", "r")
      assert.same({ { to = "c1", type = "member_joined",
                      data = { room_id = "r", client_id = "c2",
                               user_id = "bob" },
                      json = '{"client_id":"c2","room_id":"r",'
                             .. '"user_id":"bob"}' } }, fake.sent)
    end)

    it("sends member_left to the remaining members", function()
      fake.rooms.join("c1", "r")
      fake.rooms.join("c2", "r")
      fake.clear_sent()
      fake.rooms.leave("c2", "r")
      assert.equal(1, #fake.sent_to("c1", "member_left"))
    end)

    it("sends no presence when presence_events is off", function()
      fake.configure { rooms = { presence_events = false } }
      fake.rooms.join("c1", "r")
      fake.rooms.join("c2", "r")
      assert.same({}, fake.sent)
    end)

    it("enforces max_clients", function()
      fake.rooms.create("r", { max_clients = 1 })
      fake.rooms.join("c1", "r")
      assert.same({ nil, "full" }, { fake.rooms.join("c2", "r") })
    end)

    it("tells members of a deleted room", function()
      fake.rooms.join("c1", "r")
      fake.rooms.delete("r")
      assert.same({ room_id = "r" }, fake.sent_to("c1", "room_deleted")[1].data)
      assert.same({}, fake.rooms.of("c1"))
    end)

    it("makes a closed connection leave its rooms", function()
      fake.rooms.join("c1", "r")
      fake.rooms.join("c2", "r")
      fake.close("c2", 1008, "kicked")
      assert.same({ { client_id = "c2", code = 1008, reason = "kicked" } },
                  fake.closed)
      assert.equal(1, fake.rooms.count("r"))
    end)

    it("tells valid room ids by the server's rule", function()
      assert.is_true(fake.rooms.valid_id("A-z_0:9.x@y"))
      assert.is_true(fake.rooms.valid_id(string.rep("r", 128)))
      assert.is_false(fake.rooms.valid_id(string.rep("r", 129)))
      assert.is_false(fake.rooms.valid_id(""))
      assert.is_false(fake.rooms.valid_id("a b"))
      assert.is_false(fake.rooms.valid_id(42))
    end)

    it("raises on a max_clients the server refuses", function()
      for _, n in ipairs({ -1, 2.5, 10000001, 1e308, 0 / 0 }) do
        assert.has_error(function() fake.rooms.create("r", { max_clients = n }) end)
      end
      assert.is_table(fake.rooms.create("r", { max_clients = 10000000 }))
    end)

    it("refuses invalid room ids", function()
      assert.same({ nil, "invalid_room_id" },
                  { fake.rooms.join("c1", "a b") })
    end)
  end)

  describe("json", function()
    it("encodes {} as an object and json.array({}) as an array", function()
      assert.equal('{"a":{},"b":[]}',
                   fake.json.encode({ a = {}, b = fake.json.array({}) }))
    end)

    it("decodes null as json.null", function()
      assert.equal(fake.json.null, fake.json.decode('{"a":null}').a)
    end)

    it("keeps a decoded empty array an array", function()
      assert.equal("[]", fake.json.encode(fake.json.decode("[]")))
    end)

    it("emits json.raw text verbatim", function()
      local raw = fake.json.raw("[1, 2]")
      assert.equal('{"a":[1, 2]}', fake.json.encode({ a = raw }))
    end)

    it("returns nil, invalid JSON from json.raw for text that is not JSON", function()
      for _, text in ipairs({ "{x", "", "[1,]", '"\255"' }) do
        local raw, err = fake.json.raw(text)
        assert.is_nil(raw)
        assert.equal("invalid JSON", err)
      end
    end)

    it("refuses JSON text that is not UTF-8", function()
      local v, err = fake.json.decode('"\255"')
      assert.is_nil(v)
      assert.equal("invalid UTF-8", err)
    end)

    it("returns nil, err for what it cannot encode", function()
      local ok, err = fake.json.encode({ f = print })
      assert.is_nil(ok)
      assert.is_string(err)
    end)

    -- the same string and expectation as test_isolation.py's
    -- test_strings_that_are_not_utf8_are_sent_as_utf8 (the real encoder)
    it("sends each byte that starts no UTF-8 sequence as U+FFFD", function()
      local bad = "ab\255c\237\160\128\195\169\226\130"
      local fffd = "\239\191\189"
      assert.equal('["ab' .. fffd .. "c" .. fffd .. fffd .. fffd .. "\195\169"
                   .. fffd .. fffd .. '"]', fake.json.encode({ bad }))
    end)

    -- the same strings as that test: JSON escapes U+0000..U+001F only
    it("sends DEL (0x7f) unescaped", function()
      assert.equal('["\\u0001\\u001f\127"]', fake.json.encode({ "\1\31\127" }))
    end)

    it("reads DEL (0x7f) in a string as itself", function()
      assert.equal("a\127", fake.json.decode('"a\127"'))
    end)
  end)

  describe("count", function()
    it("adds n, 1 by default", function()
      assert.equal(1, fake.count("c"))
      assert.equal(6, fake.count("c", 5))
    end)

    it("refuses an n that is not an integer within 2^53", function()
      for _, n in ipairs({ 0.5, 2 ^ 53 + 2, -2 ^ 63, 0 / 0, 1 / 0 }) do
        assert.has_error(function() fake.count("c", n) end,
                         "bad argument #2 to 'count' (integer from -2^53 to 2^53 expected)")
      end
    end)

    it("returns nil, out_of_range past 2^53 and keeps the value", function()
      assert.equal(2 ^ 53, fake.count("c", 2 ^ 53))
      local v, err = fake.count("c")
      assert.is_nil(v)
      assert.equal("out_of_range", err)
      assert.equal(2 ^ 53 - 1, fake.count("c", -1))
    end)
  end)

  describe("module", function()
    it("returns the request's field as raw JSON from raw()", function()
      fake.set_request({ content = { 1, "two" } })
      assert.equal('[1,"two"]', tostring(fake.raw("content")))
    end)

    it("hands the members a handler lists in raw over as raw JSON", function()
      local handler = {
        raw = { "content" },
        handle = function(_, data) return data end,
      }
      local request = { content = { n = 1 }, room_id = "r" }
      local data = fake.call(handler, fake.client("a"), request)
      assert.equal('{"n":1}', tostring(data.content))
      assert.equal('{"content":{"n":1}}', fake.json.encode({ content = data.content }))
      assert.equal("r", data.room_id)
      assert.same({ n = 1 }, request.content) -- the caller's table is untouched
    end)

    it("has a read-only config", function()
      assert.has_error(function()
        fake.config.rooms.auto_create = false
      end)
    end)

    it("refuses new fields", function()
      assert.has_error(function() fake.extra = 1 end)
    end)

    it("raises on wrong argument types", function()
      assert.has_error(function() fake.send(1, "x", {}) end)
    end)
  end)
end)
