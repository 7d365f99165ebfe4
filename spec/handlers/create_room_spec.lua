local fake = require "spec.support.fake_gohub"

describe("handlers.create_room", function()
  local create_room, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.create_room"] = nil
    create_room = require "handlers.create_room"
    alice = fake.add_client { id = "c1", user_id = "alice" }
  end)

  it("creates the room and replies room_created", function()
    local reply, data = fake.call(create_room, alice,
                                  { room_id = "dev", name = "Developers",
                                    max_clients = 10 })
    assert.equal("room_created", reply)
    assert.same({ room_id = "dev", name = "Developers", max_clients = 10 },
                data)
    assert.same({ id = "dev", name = "Developers", max_clients = 10,
                  member_count = 0 }, fake.rooms.get("dev"))
  end)

  it("names the room after its id by default", function()
    local _, data = fake.call(create_room, alice, { room_id = "dev" })
    assert.equal("dev", data.name)
  end)

  it("uses rooms.default_max_clients by default", function()
    fake.configure { rooms = { default_max_clients = 25 } }
    local _, data = fake.call(create_room, alice, { room_id = "dev" })
    assert.equal(25, data.max_clients)
  end)

  it("accepts max_clients 0 (unlimited)", function()
    local _, data = fake.call(create_room, alice,
                              { room_id = "dev", max_clients = 0 })
    assert.equal(0, data.max_clients)
  end)

  it("answers 3001 when the room exists", function()
    fake.rooms.create("dev")
    local ok, code, message = fake.call(create_room, alice, { room_id = "dev" })
    assert.is_nil(ok)
    assert.equal(3001, code)
    assert.equal("room already exists", message)
  end)

  it("answers 1001 for an invalid room id", function()
    local ok, code, message = fake.call(create_room, alice,
                                        { room_id = ("x"):rep(129) })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be 1 to 128 of A-Z a-z 0-9 _ - : . @", message)
  end)

  it("refuses a client without create:room", function()
    local bob = fake.add_client { id = "c2", permissions = { "join:room" } }
    local ok, code, message = fake.call(create_room, bob, { room_id = "dev" })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("rejects a missing room_id", function()
    local ok, code, message = fake.call(create_room, alice, { name = "x" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects a name that is not a string", function()
    local ok, code, message = fake.call(create_room, alice,
                                        { room_id = "dev", name = 5 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("name must be a string", message)
  end)

  it("rejects a negative max_clients", function()
    local ok, code, message = fake.call(create_room, alice,
                                        { room_id = "dev", max_clients = -1 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("max_clients must be a non-negative integer", message)
  end)

  it("rejects a fractional max_clients", function()
    local ok, code = fake.call(create_room, alice,
                               { room_id = "dev", max_clients = 2.5 })
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("rejects a max_clients past the server's 10000000", function()
    local ok, code, message = fake.call(create_room, alice,
                                        { room_id = "dev", max_clients = 1e308 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("max_clients must be at most 10000000", message)
  end)

  it("accepts max_clients 10000000", function()
    local _, data = fake.call(create_room, alice,
                              { room_id = "dev", max_clients = 10000000 })
    assert.equal(10000000, data.max_clients)
  end)

  it("rejects a max_clients that is not a number", function()
    local ok, code = fake.call(create_room, alice,
                               { room_id = "dev", max_clients = "10" })
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(create_room, alice, "dev")
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
