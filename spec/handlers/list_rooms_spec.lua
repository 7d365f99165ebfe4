local fake = require "spec.support.fake_gohub"

describe("handlers.list_rooms", function()
  local list_rooms, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.list_rooms"] = nil
    list_rooms = require "handlers.list_rooms"
    alice = fake.add_client { id = "c1", user_id = "alice" }
  end)

  it("replies rooms with every room", function()
    fake.rooms.create("dev", { name = "Developers", max_clients = 5 })
    fake.rooms.join("c1", "dev")
    local reply, data = fake.call(list_rooms, alice, {})
    assert.equal("rooms", reply)
    assert.same({ rooms = { { id = "dev", name = "Developers",
                              member_count = 1, max_clients = 5 } } }, data)
  end)

  it("sends an empty list as []", function()
    local _, data = fake.call(list_rooms, alice, {})
    assert.equal('{"rooms":[]}', fake.json.encode(data))
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(list_rooms, alice, "all")
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
