local fake = require "spec.support.fake_gohub"

describe("handlers.room_message", function()
  local room_message, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.room_message"] = nil
    room_message = require "handlers.room_message"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    fake.add_client { id = "c2", user_id = "bob" }
    fake.add_client { id = "c3", user_id = "carol" }
    fake.rooms.join("c1", "lobby")
    fake.rooms.join("c2", "lobby")
    fake.clear_sent()             -- forget the member_joined events
    fake.set_now(5000)
  end)

  it("delivers room_message to the other members", function()
    fake.call(room_message, alice, { room_id = "lobby", content = "hi" })
    local got = fake.sent_to("c2", "room_message")
    assert.equal(1, #got)
    assert.same({ room_id = "lobby", content = "hi", sender_id = "alice",
                  timestamp = 5000 }, got[1].data)
  end)

  it("does not deliver to non-members", function()
    fake.call(room_message, alice, { room_id = "lobby", content = "hi" })
    assert.same({}, fake.sent_to("c3"))
  end)

  it("does not echo to the sender by default", function()
    fake.call(room_message, alice, { room_id = "lobby", content = "hi" })
    assert.same({}, fake.sent_to("c1"))
  end)

  it("echoes to the sender with rooms.echo_to_sender", function()
    fake.configure { rooms = { echo_to_sender = true } }
    fake.call(room_message, alice, { room_id = "lobby", content = "hi" })
    assert.equal(1, #fake.sent_to("c1", "room_message"))
  end)

  it("returns nothing, so the sender gets an ack", function()
    assert.equal(0, select("#", fake.call(room_message, alice,
                                          { room_id = "lobby", content = 1 })))
  end)

  it("passes any JSON content through unchanged", function()
    local content = { text = "hi", tags = { "a", "b" }, n = 1.5 }
    fake.call(room_message, alice, { room_id = "lobby", content = content })
    assert.same(content, fake.sent_to("c2")[1].data.content)
  end)

  it("accepts a null content", function()
    fake.call(room_message, alice, { room_id = "lobby",
                                     content = fake.json.null })
    assert.equal(fake.json.null, fake.sent_to("c2")[1].data.content)
  end)

  it("rejects a missing content", function()
    local ok, code, message = fake.call(room_message, alice,
                                        { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("content is required", message)
  end)

  it("rejects a missing room_id", function()
    local ok, code, message = fake.call(room_message, alice, { content = 1 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects a room_id that is not a string", function()
    local ok, code = fake.call(room_message, alice,
                               { room_id = true, content = 1 })
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(room_message, alice, "hi")
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("refuses a client without send:message", function()
    local mute = fake.add_client { id = "c4", permissions = { "join:room" } }
    fake.rooms.join("c4", "lobby")
    local ok, code, message = fake.call(room_message, mute,
                                        { room_id = "lobby", content = 1 })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("answers 3000 for a missing room", function()
    local ok, code, message = fake.call(room_message, alice,
                                        { room_id = "nope", content = 1 })
    assert.is_nil(ok)
    assert.equal(3000, code)
    assert.equal("room not found", message)
  end)

  it("answers 3003 to a non-member with rooms.members_only_send", function()
    local carol = fake.client("c3")
    local ok, code, message = fake.call(room_message, carol,
                                        { room_id = "lobby", content = 1 })
    assert.is_nil(ok)
    assert.equal(3003, code)
    assert.equal("not in room", message)
  end)

  it("lets non-members send when members_only_send is off", function()
    fake.configure { rooms = { members_only_send = false } }
    fake.call(room_message, fake.client("c3"),
              { room_id = "lobby", content = 1 })
    assert.equal(2, #fake.sent)
  end)

  it("answers 1001 for an invalid room id", function()
    local ok, code, message = fake.call(room_message, alice, { room_id = "x y", content = 1 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be 1 to 128 of A-Z a-z 0-9 _ - : . @", message)
  end)
end)
