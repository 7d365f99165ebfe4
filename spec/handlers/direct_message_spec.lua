local fake = require "spec.support.fake_gohub"

describe("handlers.direct_message", function()
  local direct_message, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.direct_message"] = nil
    direct_message = require "handlers.direct_message"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    fake.add_client { id = "c2", user_id = "bob" }
    fake.add_client { id = "c3", user_id = "bob" }   -- bob's second tab
    fake.set_now(7000)
  end)

  it("delivers to the connection whose client_id is target_id", function()
    fake.call(direct_message, alice, { target_id = "c2", content = "hi" })
    assert.equal(1, #fake.sent)
    assert.equal("c2", fake.sent[1].to)
    assert.equal("direct_message", fake.sent[1].type)
  end)

  it("delivers to every connection of the user target_id", function()
    fake.call(direct_message, alice, { target_id = "bob", content = "hi" })
    assert.equal(1, #fake.sent_to("c2", "direct_message"))
    assert.equal(1, #fake.sent_to("c3", "direct_message"))
  end)

  it("sends content, sender_id and timestamp", function()
    fake.call(direct_message, alice,
              { target_id = "c2", content = { text = "hi" } })
    assert.same({ content = { text = "hi" }, sender_id = "alice",
                  timestamp = 7000 }, fake.sent[1].data)
  end)

  it("returns nothing, so the sender gets an ack", function()
    assert.equal(0, select("#", fake.call(direct_message, alice,
                                          { target_id = "c2", content = 1 })))
  end)

  it("answers 4001 when nobody is target_id", function()
    local ok, code, message = fake.call(direct_message, alice,
                                        { target_id = "dave", content = 1 })
    assert.is_nil(ok)
    assert.equal(4001, code)
    assert.equal("client offline", message)
  end)

  it("refuses a client without send:message", function()
    local mute = fake.add_client { id = "c4", permissions = {} }
    local ok, code, message = fake.call(direct_message, mute,
                                        { target_id = "c2", content = 1 })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("rejects a missing target_id", function()
    local ok, code, message = fake.call(direct_message, alice, { content = 1 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("target_id must be a string", message)
  end)

  it("rejects a target_id that is not a string", function()
    local ok, code = fake.call(direct_message, alice,
                               { target_id = 2, content = 1 })
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("rejects a missing content", function()
    local ok, code, message = fake.call(direct_message, alice,
                                        { target_id = "c2" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("content is required", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(direct_message, alice, true)
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
