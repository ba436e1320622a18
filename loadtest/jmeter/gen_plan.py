#!/usr/bin/env python3
"""Writes src/test/jmeter/flashsale.jmx, the flash sale of loadtest/flashsale
as a JMeter plan. A .jmx is verbose XML where every element is followed by the
tree of its children; writing it from this script keeps the plan reviewable.

    python3 loadtest/jmeter/gen_plan.py     # after editing the plan below

Properties the plan reads (`-J` on the JMeter command line, or the pom's
propertiesUser): host, port, buyers, rows, cols, poll_ms.
"""
from pathlib import Path
from xml.sax.saxutils import escape

OUT = Path(__file__).resolve().parent / "src" / "test" / "jmeter" / "flashsale.jmx"


def prop(kind, name, val):
    return f'<{kind} name="{name}">{escape(str(val))}</{kind}>'


def s(name, val):
    return prop("stringProp", name, val)


def b(name, val):
    return prop("boolProp", name, "true" if val else "false")


def node(element, children=()):
    """An element and the tree of its children; a child given without a tree
    gets an empty one."""
    tree = "".join(c if c.endswith("</hashTree>") else c + "<hashTree/>" for c in children)
    return f"{element}<hashTree>{tree}</hashTree>"


def headers(name, pairs):
    items = "".join(
        f'<elementProp name="" elementType="Header">{s("Header.name", k)}{s("Header.value", v)}</elementProp>'
        for k, v in pairs
    )
    return (f'<HeaderManager guiclass="HeaderPanel" testclass="HeaderManager" testname="{name}">'
            f'<collectionProp name="HeaderManager.headers">{items}</collectionProp></HeaderManager>')


def http(name, method, path, body=None):
    if body is None:
        args = '<elementProp name="HTTPsampler.Arguments" elementType="Arguments"><collectionProp name="Arguments.arguments"/></elementProp>'
    else:
        args = ('<elementProp name="HTTPsampler.Arguments" elementType="Arguments"><collectionProp name="Arguments.arguments">'
                f'<elementProp name="" elementType="HTTPArgument">{b("HTTPArgument.always_encode", False)}'
                f'{s("Argument.value", body)}{s("Argument.metadata", "=")}</elementProp>'
                f'</collectionProp></elementProp>{b("HTTPSampler.postBodyRaw", True)}')
    return (f'<HTTPSamplerProxy guiclass="HttpTestSampleGui" testclass="HTTPSamplerProxy" testname="{name}">'
            f'{args}{s("HTTPSampler.path", path)}{s("HTTPSampler.method", method)}'
            f'{b("HTTPSampler.follow_redirects", False)}{b("HTTPSampler.use_keepalive", True)}</HTTPSamplerProxy>')


def json_extract(var, path, default):
    return (f'<JSONPostProcessor guiclass="JSONPostProcessorGui" testclass="JSONPostProcessor" testname="{var}">'
            f'{s("JSONPostProcessor.referenceNames", var)}{s("JSONPostProcessor.jsonPathExprs", path)}'
            f'{s("JSONPostProcessor.match_numbers", "1")}{s("JSONPostProcessor.defaultValues", default)}</JSONPostProcessor>')


def groovy_post(name, script):
    return (f'<JSR223PostProcessor guiclass="TestBeanGUI" testclass="JSR223PostProcessor" testname="{name}">'
            f'{s("scriptLanguage", "groovy")}{s("parameters", "")}{s("filename", "")}{s("cacheKey", "true")}'
            f'{s("script", script)}</JSR223PostProcessor>')


def assert_code(name, regex):
    # Test type 1: the response code matches the regex. assume_success lets a
    # 409 that the regex allows count as a success.
    return (f'<ResponseAssertion guiclass="AssertionGui" testclass="ResponseAssertion" testname="{name}">'
            f'<collectionProp name="Asserion.test_strings">{s("1", regex)}</collectionProp>'
            f'{s("Assertion.custom_message", "")}{s("Assertion.test_field", "Assertion.response_code")}'
            f'{b("Assertion.assume_success", True)}<intProp name="Assertion.test_type">1</intProp></ResponseAssertion>')


def thread_group(cls, gui, name, threads):
    loop = ('<elementProp name="ThreadGroup.main_controller" elementType="LoopController" '
            'guiclass="LoopControlPanel" testclass="LoopController">'
            f'{b("LoopController.continue_forever", False)}{s("LoopController.loops", "1")}</elementProp>')
    return (f'<{cls} guiclass="{gui}" testclass="{cls}" testname="{name}">'
            f'{s("ThreadGroup.on_sample_error", "continue")}{loop}{s("ThreadGroup.num_threads", threads)}'
            f'{s("ThreadGroup.ramp_time", "0")}{b("ThreadGroup.same_user_on_next_iteration", True)}</{cls}>')


def if_ctl(name, cond):
    return (f'<IfController guiclass="IfControllerPanel" testclass="IfController" testname="{name}">'
            f'{s("IfController.condition", cond)}{b("IfController.evaluateAll", False)}'
            f'{b("IfController.useExpression", True)}</IfController>')


def auth(var):
    return headers("bearer", [("Authorization", "Bearer ${%s}" % var)])


def idempotency():
    # A fresh key per request: JMeter does not retry, so a 503 counts as an
    # error of the run rather than being retried with the same key.
    return headers("idempotency", [("Idempotency-Key", "${__UUID()}")])


DEFAULTS = ('<ConfigTestElement guiclass="HttpDefaultsGui" testclass="ConfigTestElement" testname="the platform">'
            '<elementProp name="HTTPsampler.Arguments" elementType="Arguments"><collectionProp name="Arguments.arguments"/></elementProp>'
            f'{s("HTTPSampler.domain", "${__P(host,127.0.0.1)}")}{s("HTTPSampler.port", "${__P(port,18080)}")}'
            f'{s("HTTPSampler.protocol", "http")}</ConfigTestElement>')
JSON_BODY = headers("JSON bodies", [("Content-Type", "application/json")])

SELLER = "seller-${__P(run)}@jmeter.example.com"
SCHEDULE = "/api/v1/schedules/${__P(schedule_id)}"

SETUP = node(thread_group("SetupThreadGroup", "SetupThreadGroupGui", "a seller opens a sale", "1"), [
    node(http("ready", "GET", "/readyz"), [
        groovy_post("run id", "props.put('run', UUID.randomUUID().toString().substring(0, 8))"),
    ]),
    node(http("seller sign-up", "POST", "/api/v1/users",
              '{"email":"%s","password":"pw-jmeter-seller","nickname":"s${__P(run)}",'
              '"phone":"010-1234-5678","role":"SELLER"}' % SELLER),
         [assert_code("201", "201")]),
    node(http("seller login", "POST", "/api/v1/auth/login",
              '{"email":"%s","password":"pw-jmeter-seller"}' % SELLER),
         [json_extract("seller_token", "$.access_token", "NONE")]),
    node(http("stage", "POST", "/api/v1/stages",
              '{"name":"JMeter Arena","location":"Seoul","rows":${__P(rows,10)},"cols":${__P(cols,25)}}'),
         [auth("seller_token"), json_extract("stage_id", "$.stage_id", "NONE"), assert_code("201", "201")]),
    node(http("concert", "POST", "/api/v1/concerts",
              '{"stage_id":"${stage_id}","concert_name":"JMeter Flash","runtime":120,"start_date":"2030-05-01",'
              '"end_date":"2030-05-03","price":90,"concert_image":"https://img.example.com/j.png"}'),
         [auth("seller_token"), json_extract("concert_id", "$.concert_id", "NONE"), assert_code("201", "201")]),
    node(http("schedule", "POST", "/api/v1/concerts/${concert_id}/schedules",
              '{"concert_date":"2030-05-02","concert_time":"19:30"}'),
         [auth("seller_token"), json_extract("schedule_id", "$.schedule_id", "NONE"), assert_code("201", "201"),
          groovy_post("share the schedule", "props.put('schedule_id', vars.get('schedule_id'))")]),
    # The seat map appears once the read model has the schedule.
    node('<WhileController guiclass="WhileControllerGui" testclass="WhileController" testname="until the seat map is served">'
         + s("WhileController.condition", '${__jexl3("${seats_code}" != "200")}') + "</WhileController>", [
        node(http("seat map ready", "GET", SCHEDULE + "/seats"), [
            groovy_post("code", "vars.put('seats_code', prev.getResponseCode()); prev.setSuccessful(true)"),
            '<ConstantTimer guiclass="ConstantTimerGui" testclass="ConstantTimer" testname="pause">'
            + s("ConstantTimer.delay", "200") + "</ConstantTimer>",
        ]),
    ]),
])

BUYER = "b${__threadNum}-${__P(run)}@jmeter.example.com"
PASSWORD = "pw-jmeter-${__threadNum}-x"
PICK = """def seats = new groovy.json.JsonSlurper().parseText(prev.getResponseDataAsString()).seats
def free = seats == null ? [] : seats.findAll { it.status == 'AVAILABLE' }
if (free.isEmpty()) {
  vars.put('held', 'soldout')
} else {
  def seat = free[new Random().nextInt(free.size())]
  vars.put('row', seat.row.toString())
  vars.put('col', seat.col.toString())
}"""

BUYERS = node(thread_group("ThreadGroup", "ThreadGroupGui", "buyers", "${__P(buyers,500)}"), [
    node(http("sign-up", "POST", "/api/v1/users",
              '{"email":"%s","password":"%s","nickname":"j${__threadNum}-${__P(run)}",'
              '"phone":"010-1234-5678","role":"USER"}' % (BUYER, PASSWORD)),
         [assert_code("201", "201")]),
    node(http("login", "POST", "/api/v1/auth/login", '{"email":"%s","password":"%s"}' % (BUYER, PASSWORD)),
         [json_extract("token", "$.access_token", "NONE")]),
    node(http("join", "POST", SCHEDULE + "/queue", "{}"), [
        # Every buyer waits here for the others: they all join at one instant.
        '<SyncTimer guiclass="TestBeanGUI" testclass="SyncTimer" testname="everyone at once">'
        + s("groupSize", "${__P(buyers,500)}") + '<longProp name="timeoutInMs">600000</longProp></SyncTimer>',
        auth("token"), idempotency(), json_extract("status", "$.status", "WAITING"),
        assert_code("200 or 201", "20[01]"),
    ]),
    node('<WhileController guiclass="WhileControllerGui" testclass="WhileController" testname="wait for admission">'
         + s("WhileController.condition", '${__jexl3("${status}" == "WAITING")}') + "</WhileController>", [
        node(http("queue status", "GET", SCHEDULE + "/queue/me"), [
            '<ConstantTimer guiclass="ConstantTimerGui" testclass="ConstantTimer" testname="poll interval">'
            + s("ConstantTimer.delay", "${__P(poll_ms,250)}") + "</ConstantTimer>",
            auth("token"), json_extract("status", "$.status", "WAITING"),
        ]),
    ]),
    node(if_ctl("admitted", '${__jexl3("${status}" == "ADMITTED")}'), [
        node('<LoopController guiclass="LoopControlPanel" testclass="LoopController" testname="hold attempts">'
             + b("LoopController.continue_forever", True) + s("LoopController.loops", "10") + "</LoopController>", [
            node(if_ctl("still looking", '${__jexl3("${held}" != "true" && "${held}" != "soldout")}'), [
                node(http("seat map", "GET", SCHEDULE + "/seats"), [groovy_post("pick a free seat", PICK)]),
                node(if_ctl("a seat is free", '${__jexl3("${held}" != "soldout")}'), [
                    node(http("hold", "POST", SCHEDULE + "/holds", '{"seats":[{"row":${row},"col":${col}}]}'), [
                        auth("token"), idempotency(),
                        assert_code("201, or 409 for a seat taken meanwhile", "201|409"),
                        groovy_post("held?", "if (prev.getResponseCode() == '201') { vars.put('held', 'true') }"),
                    ]),
                ]),
            ]),
        ]),
        node(http("leave", "DELETE", SCHEDULE + "/queue/me"), [auth("token"), idempotency(), assert_code("204", "204")]),
    ]),
])

PLAN = ('<TestPlan guiclass="TestPlanGui" testclass="TestPlan" testname="flash sale">'
        '<elementProp name="TestPlan.user_defined_variables" elementType="Arguments">'
        '<collectionProp name="Arguments.arguments"/></elementProp>'
        + b("TestPlan.functional_mode", False) + b("TestPlan.serialize_threadgroups", True) + "</TestPlan>")

DOC = ('<?xml version="1.0" encoding="UTF-8"?>\n'
       "<!-- Generated by loadtest/jmeter/gen_plan.py: edit that, then run it. -->\n"
       '<jmeterTestPlan version="1.2" properties="5.0" jmeter="5.6.2"><hashTree>'
       + node(PLAN, [DEFAULTS, JSON_BODY, SETUP, BUYERS]) + "</hashTree></jmeterTestPlan>\n")

if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(DOC)
    print(f"wrote {OUT}")
