local fake = require "spec.support.fake_gohub"

describe("handlers.broadcast", function()
  local broadcast, admin

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.broadcast"] = nil
    broadcast = require "handlers.broadcast"
    admin = fake.add_client { id = "c1", user_id = "root",
                              permissions = { "admin:system" } }
    fake.add_client { id = "c2", user_id = "bob" }
    fake.add_client { id = "c3", user_id = "carol" }
    fake.set_now(9000)
  end)

  it("delivers broadcast to every other connection", function()
    fake.call(broadcast, admin, { content = "maintenance at 6" })
    assert.equal(1, #fake.sent_to("c2", "broadcast"))
    assert.equal(1, #fake.sent_to("c3", "broadcast"))
  end)

  it("does not deliver to the sender", function()
    fake.call(broadcast, admin, { content = "x" })
    assert.same({}, fake.sent_to("c1"))
  end)

  it("sends content, sender_id and timestamp", function()
    fake.call(broadcast, admin, { content = { level = "warn" } })
    assert.same({ content = { level = "warn" }, sender_id = "root",
                  timestamp = 9000 }, fake.sent_to("c2")[1].data)
  end)

  it("returns nothing, so the sender gets an ack", function()
    assert.equal(0, select("#", fake.call(broadcast, admin, { content = 1 })))
  end)

  it("lets a client with the broadcast permission send", function()
    local herald = fake.add_client { id = "c4", permissions = { "broadcast" } }
    fake.call(broadcast, herald, { content = 1 })
    assert.equal(3, #fake.sent)
  end)

  it("refuses a client without broadcast", function()
    local ok, code, message = fake.call(broadcast, fake.client("c2"),
                                        { content = 1 })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("rejects a missing content", function()
    local ok, code, message = fake.call(broadcast, admin, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("content is required", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(broadcast, admin, "hello")
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
