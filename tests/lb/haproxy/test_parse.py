"""parse.py: HAProxy 2.6's answers as captured from a real one, and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.errors import RemoteProtocolError
from zonegate.lb.haproxy.model import ServerAdmin, ServerKey
from zonegate.lb.haproxy.parse import (
    parse_info,
    parse_proc,
    parse_servers_state,
    parse_stat_csv,
    reported_state,
)

SERVERS_STATE = """\
1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be_web 1 a 127.0.0.1 0 8 5 10 1 8 2 0 6 0 0 0 - 1 - 0 0 - - 0
3 be_web 2 b 127.0.0.1 2 0 20 20 3 1 0 4 0 0 0 0 - 2 - 0 0 - - 0
3 be_web 3 spill:bk:c 127.0.0.1 0 1 0 0 2 8 2 0 2 0 0 0 - 3 - 0 0 - - 0

"""

STAT = '''\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,
fe_web,FRONTEND,,,0,0,9979,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,
be_web,a,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,10,1,0,1,1,3,3,,1,3,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,"Connection refused, ""quoted""",,0,0,0,0,,,,Layer4 connection problem,,1,1,0,,,,127.0.0.1:1,,http,,
'''


def test_servers_state():
    rows = parse_servers_state(SERVERS_STATE)
    assert [(r.backend, r.server, r.port) for r in rows] == [
        ("be_web", "a", 1), ("be_web", "b", 2), ("be_web", "spill:bk:c", 3)
    ]  # fmt: skip
    state = reported_state(SERVERS_STATE)
    a, b, c = (state[ServerKey("be_web", n)] for n in ("a", "b", "spill:bk:c"))
    assert (a.admin, a.weight, a.up, a.check_enabled) == (ServerAdmin.DRAIN, 5, False, True)
    assert (b.admin, b.up, b.check_configured) == (ServerAdmin.READY, True, False)
    assert (c.admin, c.check_configured, c.check_enabled) == (ServerAdmin.MAINT, True, False)


def test_stat_rows_are_typed():
    fe, a = parse_stat_csv(STAT)
    assert fe["pxname"] == "fe_web"
    assert fe["slim"] == 9979
    assert fe["qcur"] is None
    assert a["status"] == "DOWN"
    assert a["weight"] == 10
    assert a["last_chk"] == 'Connection refused, "quoted"'
    assert a["check_desc"] == "Layer4 connection problem"


def test_info_and_proc():
    info = parse_info("Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nPid: 24120\n\n")
    assert info["Pid"] == "24120"
    table = parse_proc(
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
        "24117           master          2 [failed: 1]   0d00h10m29s     2.6.12-1+deb12u4\n"
        "# workers\n"
        "1275            worker          1               0d00h00m03s     2.6.12-1+deb12u4\n"
        "# old workers\n"
        "1201            worker          2               0d00h01m03s     2.6.12-1+deb12u4\n"
        "# programs\n\n"
    )
    assert (table.master.pid, table.master.reloads, table.master.failed_reloads) == (24117, 2, 1)
    assert [w.pid for w in table.workers] == [1275]
    assert [w.pid for w in table.old_workers] == [1201]


@pytest.mark.parametrize(
    "parse", [parse_servers_state, parse_stat_csv, parse_info, parse_proc, reported_state]
)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "No such backend.\n",
        "Unknown command, but maybe one of the following ones is a better match:\n",
        "2\n# be_id be_name\n",
        "1\n# be_id be_name srv_name\n3 be_web a\n",
    ],
)
def test_other_answers_are_a_clear_error(parse, text):
    with pytest.raises(RemoteProtocolError):
        parse(text)


def test_bad_numbers_in_servers_state():
    bad = SERVERS_STATE.replace("3 be_web 1 a 127.0.0.1 0 8 5", "3 be_web 1 a 127.0.0.1 x 8 5")
    with pytest.raises(RemoteProtocolError, match="bad number"):
        parse_servers_state(bad)
    short = SERVERS_STATE.replace(" - - 0\n3 be_web 2", "\n3 be_web 2", 1)
    with pytest.raises(RemoteProtocolError, match="short"):
        parse_servers_state(short)


@given(st.text())
def test_any_text_gives_rows_or_our_error(text):
    for parse in (parse_servers_state, parse_stat_csv, parse_info, parse_proc):
        try:
            parse(text)
        except RemoteProtocolError:
            pass
