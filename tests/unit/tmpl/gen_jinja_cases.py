#!/usr/bin/env python3
"""Regenerates jinja_cases.json: renderings by the reference engine, Python's Jinja2, set up as
Hugging Face transformers sets it up for chat templates (immutable sandbox, trim_blocks,
lstrip_blocks, loopcontrols, raise_exception, strftime_now, its own tojson).

    python3 tests/unit/tmpl/gen_jinja_cases.py > tests/unit/tmpl/jinja_cases.json

Each case is {"name", "template" | "template_file", "context", "expected" | "error"}; the
test renders it with Spindle and compares byte for byte, or the error: its kind
(raise_exception, runaway recursion, other) and its message, except for syntax errors
("error_any"), which Spindle words its own way.
"""
import json
import os
import sys
from datetime import datetime, timezone

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = 1768478400  # 2026-01-15 12:00:00 UTC; the C test pins the same clock, in UTC


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.fromtimestamp(NOW, timezone.utc).strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

CTX = {
    "s": "Hello World", "e": "", "n": 7, "f": 2.5, "neg": -3, "t": True, "no": False, "z": None,
    "l": [3, 1, 2], "words": ["b", "A", "a", "c"], "d": {"b": 1, "a": 2, "items": 9},
    "people": [{"name": "Ann", "age": 31, "tags": ["x"]}, {"name": "bob", "age": 25},
               {"name": "Cy", "age": 40, "city": "Oslo"}],
    "uni": "Ünïcödé ✓ 日本語 🙂", "nested": {"a": {"b": [1, {"c": "deep"}]}},
    "quote": "it's \"q\" <&> \\ \n\ttab",
    "msgs": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},
             {"role": "assistant", "content": "<think>\nplan\n</think>\n\na1"},
             {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]}],
    "enable_thinking": False,
}

LANG = [
    # output and literals
    ("print_types", "{{ s }}|{{ n }}|{{ f }}|{{ t }}|{{ z }}|{{ l }}|{{ d }}|{{ undefined_var }}|"),
    ("literals", "{{ 'a' \"b\" }} {{ 1_000 }} {{ 1.5e3 }} {{ 0.1 + 0.2 }} {{ [1, 'x', none, True, 2.0] }} {{ {'k': (1,), 'j': ()} }}"),
    ("int_literals", "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000_000 }} {{ 0 }} {{ 0.5 }} {{ 1e3 }} {{ l.0 }}"),
    ("unicode_space_in_tag", "{{\u00a0n\u3000}}{%\u00a0if true\u00a0%}y{% endif %}"),
    ("escapes", "{{ 'a\\nb\\tc\\\\d\\'e\\\"f\\x41\\u00e9\\U0001F642\\d' }}"),
    ("floats", "{{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ 123456789.125 }} {{ -0.0 }} {{ 2/3 }} {{ 1e300*1e10 }} {{ 3.0 }}"),
    ("repr_strings", "{{ [quote, uni, 'x\\x7fy', '\\x00'] }}"),
    ("tuple_print", "{{ 1, 2 }} {{ (1,) }} {{ ('a', [1]) }}"),
    # arithmetic
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ true + 1 }}"),
    ("precedence", "{{ 1 + 2 * 3 - 4 / 2 }} {{ 'a' ~ 2 * 3 }} {{ 1 - 2 - 3 }} {{ 2 * 3 % 4 }} {{ -n|abs }} {{ not 1 == 2 }} {{ 1 if false else 2 if false else 3 }}"),
    ("concat", "{{ 'a' ~ 1 ~ none ~ true ~ 1.5 ~ [1] ~ undefined_var }}|{{ 'x' + 'y' }}|{{ [1] + [2, 3] }}|{{ (1,) + (2,) }}"),
    ("repeat", "{{ 'ab' * 3 }}|{{ 3 * '-' }}|{{ 'x' * -1 }}|{{ [0] * 3 }}|{{ '  ' * 2 }}|"),
    ("percent_format", "{{ '%s is %d years' % ('Ann', 31) }} {{ '%05.1f|%-4s|%x|%%' % (3.14159, 'ab', 255) }} {{ '%(a)s-%(b)s' % {'a': 1, 'b': 2} }}"),
    ("compare", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ none == none }} {{ 'a' != 'a' }} {{ (1, 2) == [1, 2] }}"),
    ("in_ops", "{{ 'lo' in s }} {{ 2 in l }} {{ 'a' in d }} {{ 'zz' not in d }} {{ 'x' in undefined_var }} {{ '' in 'abc' }}"),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ none or [] or 0 }} {{ '' and x.y }} {{ not undefined_var }} {{ not [] }}"),
    ("truthiness", "{% for v in [0, 1, '', 'a', [], [0], {}, none, 0.0, undefined_var] %}{{ 'T' if v else 'F' }}{% endfor %}"),
    # access
    ("getattr_getitem", "{{ d.a }} {{ d['b'] }} {{ nested.a.b[1].c }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ s[1] }} {{ uni[3] }} {{ d.missing }}|{{ l[10] }}|"),
    ("dict_method_wins", "{{ d.items()|list }} {{ d['items'] }} {{ d.get('a') }} {{ d.get('q') }} {{ d.get('q', 5) }} {{ d.keys()|list }} {{ d.values()|list }}"),
    ("slices", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ s[:5] }} {{ s[-5:] }} {{ s[::-1] }} {{ uni[2:6] }} {{ uni[::-2] }} {{ l[5:] }} {{ l[-10:2] }}"),
    # statements
    ("if_elif", "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x == 2 %}two{% elif x is even %}even{% else %}other{% endif %} {% endfor %}"),
    ("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem if not loop.first }}{{ loop.nextitem if not loop.last }};{% endfor %}"),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in l if x > 5 %}{{ x }}{% else %}none{% endfor %}"),
    ("for_filter", "{% for x in range(10) if x is odd %}{{ x }}/{{ loop.length }} {% endfor %}"),
    ("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for (a, b) in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}"),
    ("for_dict_string", "{% for k in d %}{{ k }}{% endfor %}|{% for c in uni %}[{{ c }}]{% endfor %}"),
    ("for_nested_loop", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ loop.index }}{{ b }} {% endfor %}{% endfor %}"),
    ("break_continue", "{% for i in range(10) %}{% if i == 6 %}{% break %}{% endif %}{% if i is even %}{% continue %}{% endif %}{{ i }}{% endfor %}"),
    ("loop_cycle", "{% for i in range(5) %}{{ loop.cycle('a', 'b', 'c') }}{% endfor %}"),
    ("set_scoping", "{% set x = 1 %}{% for i in range(3) %}{{ x }}{% set x = x + 10 %}{{ x }};{% endfor %}{{ x }}{% if true %}{% set y = 5 %}{% endif %}{{ y }}"),
    ("namespace", "{% set ns = namespace(c=0, items=[]) %}{% for i in range(4) %}{% set ns.c = ns.c + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.c }} {{ ns.items }} {{ ns }}"),
    ("set_tuple", "{% set a, b = 1, 2 %}{% set (c, d) = [3, 4] %}{{ a }}{{ b }}{{ c }}{{ d }}"),
    ("set_block", "{% set x %}  inner {{ n }}\n{% endset %}[{{ x }}]{% set y | trim | upper %}  hi  {% endset %}[{{ y }}]"),
    ("macro_basic", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(punct='.', name='C') }} {{ greet() }}|"),
    ("macro_recursion", "{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k * fact(k - 1)|int }}{% endif %}{% endmacro %}{{ fact(10) }}"),
    ("macro_globals", "{% set g = 1 %}{% macro m() %}{{ g }}{% endmacro %}{% set g = 2 %}{{ m() }}{% for g in [9] %}{{ m() }}{% endfor %}"),
    ("macro_varargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}"),
    ("macro_returns_string", "{% macro m() %}x{% endmacro %}{{ m() is string }} {{ (m() ~ 'y')|length }} {{ m()|upper }}"),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ n }}{% endcall %}"),
    ("call_block_args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x, loop.index) }}{% endfor %}{% endmacro %}{% call(item, i) each(['p', 'q']) %}{{ i }}:{{ item }} {% endcall %}"),
    ("filter_block", "{% filter upper %}hello {{ s }}{% endfilter %}|{% filter trim | replace('a', 'b') %}  aaa  {% endfilter %}"),
    ("with_block", "{% with a = 1, b = n %}{{ a + b }}{% endwith %}{{ a }}|"),
    ("raw_block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}"),
    ("comments", "a{# comment #}b{#- trimmed -#} c {# multi\nline #}d"),
    # whitespace control
    ("ws_trim_lstrip", "<ul>\n  {% for x in l %}\n    <li>{{ x }}</li>\n  {% endfor %}\n</ul>\n"),
    ("ws_minus", "a   {%- if true -%}   \n  b  {%- endif %}   c\n  {{- ' d ' -}}  \n e"),
    ("ws_plus", "x\n    {%+ if true %}y{% endif +%}\nz"),
    ("ws_inline_tags", "  {% if true %}  a {% endif %}  \n  {{ 'v' }}\n  {# c #}  x\n"),
    ("ws_trailing_newline", "line\n"),
    ("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n"),
    ("ws_unicode_space", "a\u3000{%- if true %}b{% endif %}"),
    # filters
    ("f_strings", "{{ s|lower }} {{ s|upper }} {{ 'hELLO wORLD'|capitalize }} {{ 'a-b c_d (e) [f]'|title }} {{ '  x  '|trim }}| {{ 'xxhixx'|trim('x') }} {{ s|replace('o', '0') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'ab'|replace('', '-') }}"),
    ("f_unicode_case", "{{ uni|upper }} {{ 'ÀÉÎ ŁÓDŹ ΑΒΓ ДЖЮ'|lower }} {{ 'émile zola'|title }}"),
    ("f_length_count", "{{ s|length }} {{ uni|length }} {{ l|count }} {{ d|length }} {{ undefined_var|length }}"),
    ("f_first_last", "{{ l|first }} {{ l|last }} {{ s|first }} {{ s|last }} {{ []|first }}|"),
    ("f_join", "{{ l|join }} {{ l|join(', ') }} {{ people|join('/', attribute='name') }} {{ ['a', none, 1]|join('-') }}"),
    ("f_default", "{{ undefined_var|default('d') }} {{ e|default('d') }} {{ e|default('d', true) }} {{ z|default('d') }} {{ undefined_var|d }}| {{ n|d(0) }}"),
    ("f_list_items", "{{ d|list }} {{ d|items|list }} {{ 'ab'|list }} {{ undefined_var|items|list }} {{ d|dictsort }} {{ d|dictsort(reverse=true) }} {{ d|dictsort(by='value') }}"),
    ("f_sort", "{{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ words|sort(reverse=true) }} {{ people|sort(attribute='age')|map(attribute='name')|list }} {{ [3, 1.5, 2]|sort }}"),
    ("f_unique_minmax", "{{ ['a', 'A', 'b', 'a', 1, 1.0, true]|unique|list }} {{ words|min }} {{ words|max }} {{ people|max(attribute='age') }} {{ l|sum }} {{ people|sum(attribute='age') }}"),
    ("f_select_reject", "{{ range(10)|select('odd')|list }} {{ range(10)|reject('divisibleby', 3)|list }} {{ [0, 1, '', 'a', none]|select|list }} {{ l|select('>', 1)|list }} {{ l|reject('equalto', 1)|list }}"),
    ("f_selectattr", "{{ people|selectattr('city')|list }} {{ people|selectattr('city', 'defined')|map(attribute='name')|list }} {{ people|rejectattr('age', 'gt', 30)|map(attribute='name')|list }} {{ people|selectattr('name', 'equalto', 'bob')|list|length }}"),
    ("f_map", "{{ people|map(attribute='name')|list }} {{ people|map(attribute='city', default='-')|list }} {{ words|map('upper')|list }} {{ nested|map('upper')|list }} {{ nested.a|map(attribute='0')|list }}"),
    ("f_map_path", "{{ people[:1]|map(attribute='tags.0')|list }} {{ people|map(attribute='tags.0')|list }}"),
    ("f_map_huge_index", "{{ people|map(attribute='tags.99999999999999999999999', default='-')|list }} {{ people|map(attribute='77777777777777777777777', default='?')|join }} {{ people|map(attribute='tags.0', default='-')|list }}"),
    ("generators", "{{ l|map('string')|join(',') }} {{ [] | select | list }} {{ 'yes' if []|select else 'no' }} {{ l|reverse|list }} {{ d.items()|list }} {{ d.keys() }} {{ range(3) }} {{ (l|select)|first }}"),
    ("err_generator_tojson", "{{ l|map('string')|tojson }}"),
    ("err_generator_len", "{{ l|select|length }}"),
    ("err_items_tojson", "{{ d.items()|tojson }}"),
    ("f_numbers", "{{ -3|abs }} {{ 3.7|int }} {{ '42'|int }} {{ ' 12 '|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ '0x1A'|int(0, 16) }} {{ '3.5'|float }} {{ 'nan?'|float }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 7|round }} {{ 2.1|round(method='ceil') }} {{ 2.9|round(0, 'floor') }} {{ 1234.5678|round(-2) }}"),
    ("f_string_list", "{{ l|string }} {{ 5|string ~ 'x' }} {{ none|string }} {{ l|reverse|list }} {{ s|reverse }} {{ l|list is sequence }}"),
    ("f_indent", "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb\\n'|indent(1, blank=true) }}|{{ 'x\\ny'|indent('> ') }}"),
    ("f_escape_safe", "{{ quote|escape }} {{ quote|e }} {{ '<b>'|safe }}"),
    ("f_format", "{{ '%s-%s'|format('a', 'b') }} {{ '%d%%'|format(50) }} {{ '%.2f'|format(f) }} {{ '%5s|%-5s|'|format('r', 'l') }} {{ '%(x)s'|format(x='kw') }} {{ '%r'|format('q') }} {{ '%c%c'|format(65, 'é'|length + 65) }}"),
    ("f_round_int", "{{ 1234|round(-2) }} {{ 1250|round(-2) }} {{ 1350|round(-2) }} {{ -1250|round(-2) }} {{ 15|round(-1) }} {{ 2.675|round(2) }} {{ -0.5|round }}"),
    ("f_tojson_positional", "{{ d|tojson(2) }} {{ uni|tojson(true) }}"),
    ("seq_tests", "{{ d.keys() is sequence }} {{ range(2) is sequence }} {{ (l|select) is sequence }} {{ d.items() is iterable }} {{ d.values()|length }}"),
    ("f_wordcount_attr", "{{ s|wordcount }} {{ people[0]|attr('name') }}"),
    ("f_tojson", "{{ d|tojson }} {{ people|tojson }} {{ uni|tojson }} {{ quote|tojson }} {{ [1.0, 2.5, none, true]|tojson }} {{ {'k': {}}|tojson }}"),
    ("f_tojson_opts", "{{ people[:2]|tojson(indent=2) }}\n{{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ uni|tojson(ensure_ascii=true) }} {{ [[], {}]|tojson(indent=4) }} {{ {'a': 1}|tojson(indent='\\t') }}"),
    # tests
    ("tests_types", "{{ n is number }} {{ f is float }} {{ n is integer }} {{ t is integer }} {{ t is boolean }} {{ s is string }} {{ d is mapping }} {{ l is sequence }} {{ s is iterable }} {{ n is iterable }} {{ undefined_var is iterable }} {{ z is none }} {{ t is true }} {{ no is false }} {{ greet is callable }} {{ range is callable }}"),
    ("tests_values", "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'ab' is lower }} {{ 'AB' is upper }} {{ 'A1' is upper }} {{ '1' is lower }} {{ n is eq 7 }} {{ n is equalto(7) }} {{ n is ne 7 }} {{ 2 is lt 3 }} {{ 2 is ge 3 }} {{ 'a' is in 'cat' }} {{ 1 is in l }} {{ z is sameas none }} {{ 'upper' is filter }} {{ 'odd' is test }}"),
    ("tests_defined", "{{ undefined_var is defined }} {{ undefined_var is undefined }} {{ d.a is defined }} {{ d.zz is defined }} {{ l[9] is defined }} {{ nested.a.b is not defined }}"),
    # globals and methods
    ("range_fn", "{{ range(4)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }} {{ range(3, 1)|list }}"),
    ("dict_fn", "{{ dict(a=1, b='x') }} {{ dict([('k', 1)]) }} {{ namespace(d).a }}"),
    ("strftime", "{{ strftime_now('%Y-%m-%d %H:%M') }} {{ strftime_now('%d %b %Y') }} {{ strftime_now('%A %B') }}"),
    ("str_methods", "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }} {{ ' a  b c '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }} {{ 'a,b'.split(',', maxsplit=0) }} {{ ' x  y '.split(None, 1) }} {{ 'a\\nb\\r\\nc'.splitlines() }}"),
    ("str_methods2", "{{ s.startswith('He') }} {{ s.endswith(('x', 'ld')) }} {{ s.upper() }} {{ s.lower() }} {{ 'they\\'re bill\\'s'.title() }} {{ 'hello'.capitalize() }} {{ s.replace('l', 'L', 2) }} {{ s.find('o') }} {{ s.rfind('o') }} {{ uni.find('日') }} {{ s.count('l') }} {{ '-'.join(['a', 'b']) }} {{ '{} and {}'.format('x', 1) }} {{ '{0}{1}{0}'.format('a', 'b') }} {{ '{name}!'.format(name='N') }}"),
    ("str_is_methods", "{{ '123'.isdigit() }} {{ '12a'.isdigit() }} {{ 'abc'.isalpha() }} {{ 'ab1'.isalnum() }} {{ ' \\t'.isspace() }} {{ 'abc'.islower() }} {{ 'ABC'.isupper() }} {{ ''.isdigit() }}"),
    ("split_last", "{% set c = 'a</think>b</think>final' %}{{ c.split('</think>')[-1] }} {{ c.split('</think>')[0] }}"),
    ("raise", "{% if n > 5 %}{{ raise_exception('n is ' ~ n ~ ': too big') }}{% endif %}"),
    # constructs common in other model templates
    ("reverse_index", "{% set ns = namespace(last=-1) %}{% for m in msgs[::-1] %}{% set i = (msgs|length - 1) - loop.index0 %}{% if ns.last < 0 and m.role == 'user' %}{% set ns.last = i %}{% endif %}{% endfor %}{{ ns.last }}"),
    ("think_split", "{% set c = msgs[2].content %}[{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}]|[{{ c.split('</think>')[-1].lstrip('\\n') }}]|{{ '</think>' in c }}"),
    ("content_parts", "{% for m in msgs %}{% if m.content is string %}{{ m.content|length }}{% else %}{% for p in m.content if p.type == 'text' %}{{ p.text }}{% endfor %}+{{ m.content|selectattr('type', 'equalto', 'image')|list|length }}{% endif %};{% endfor %}"),
    ("alternation", "{% for m in msgs|rejectattr('role', 'equalto', 'system') %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{{ m.role[0] }}{% endfor %}"),
    ("alternation_error", "{% for m in msgs %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% endfor %}"),
    ("bool_kwarg", "{{ enable_thinking is defined and enable_thinking is false }} {{ (enable_thinking|default(true)) }} {{ missing_flag is not defined or missing_flag }}"),
    ("system_split", "{% if msgs[0]['role'] == 'system' %}{% set sys = msgs[0]['content'] %}{% set rest = msgs[1:] %}{% else %}{% set sys = '' %}{% set rest = msgs %}{% endif %}{{ sys }}:{{ rest|length }}:{{ rest|map(attribute='role')|join(',') }}"),
    ("json_args", "{% for m in msgs %}{{ {'role': m.role, 'n': loop.index}|tojson }}{% if not loop.last %},{% endif %}{% endfor %}"),
    # errors
    ("err_undefined_name_attr", "{{ nope.attr }}"),
    ("err_undefined_attr_chain", "{{ d.missing.deeper }}"),
    ("err_undefined_elem", "{{ l[10].x }}"),
    ("err_none_attr", "{{ z.a.b }}"),
    ("err_undefined_add", "{{ 'a' + nope }}"),
    ("err_str_plus_int", "{{ 'a' + 1 }}"),
    ("err_int_plus_str", "{{ 1 + 'a' }}"),
    ("err_compare", "{{ 'a' < 1 }}"),
    ("err_compare_gt", "{{ none >= 1 }}"),
    ("err_div_zero", "{{ 1 / 0 }}"),
    ("err_not_iterable", "{% for x in 5 %}{% endfor %}"),
    ("err_none_iterable", "{% for x in z %}{% endfor %}"),
    ("err_unpack", "{% for a, b in [[1]] %}{% endfor %}"),
    ("err_macro_args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"),
    ("err_macro_kwarg", "{% macro m(a) %}{% endmacro %}{{ m(b=1) }}"),
    ("err_append_unsafe", "{% set x = [] %}{% set _ = x.append(1) %}"),
    ("err_tojson_undefined", "{{ nope|tojson }}"),
    ("err_unknown_filter", "{{ 1|nosuchfilter }}"),
    ("err_unknown_test", "{{ 1 is nosuchtest }}"),
    ("err_cond_no_else", "{{ ('x' if false).y }}"),
    ("err_syntax_unclosed", "{% if true %}x"),
    ("err_syntax_bad_expr", "{{ 1 + }}"),
    ("err_syntax_unknown_tag", "{% frobnicate %}"),
    ("err_ns_assign", "{% set x = 1 %}{% set x.y = 2 %}"),
    ("err_undefined_call", "{{ nope() }}"),
    ("err_unhashable", "{{ {[1]: 2} }}"),
    ("err_int_overflow_like", "{{ 'x' * 'y' }}"),
    # numbers at the edges of their conversions (nan and inf come from strings: JSON has none)
    ("num_percent_int", "{{ '%d|%i|%u|%d|%d' % (3.99, -0.5, 7, true, 1e18) }} {{ '%.0d|%.3d|%05.3d|%.3x' % (0, 5, 1, -5) }} {{ '%#o|%#x|%#X|%#5x|%-#6x|%#06x|%#x' % (15, 255, 255, 255, 255, 255, 0) }} {{ '%+05d|% 05d|%--5d|%-05d|%+-5d|%x|%o' % (3, 3, 3, 3, 3, -255, -8) }} {{ '%d' % (-9223372036854775807 - 1) }}"),
    ("num_percent_float", "{{ '%05f|%-6f|%+.1f|%010.3f|%e|%G|%#.0f|%+f|%f' % ('inf'|float, 'nan'|float, 2.25, -3.14159, 1e33, 1e-10, 3.0, '-nan'|float, -0.0) }} {{ '%5s|%-5s|%.2s|%05s' % ('abc', 'ab', 'xyz', 'q') }}"),
    ("num_percent_c", "{{ '%c%c%c%c|%3c|%-3c|' % (65, 'é', 128578, true, 66, 'z') }}"),
    ("num_percent_wide", "{{ ('%300d' % 7)|length }} {{ ('%.300f' % 1.5)|length }} {{ ('%-1000s|' % 'x')|length }} {{ ('%0500.2e' % -1.5)|length }} {{ '%.320f' % 1e308 == '%.320f' % 1e308 }}"),
    ("percent_undefined", "[{{ '%s' % undefined_var }}] [{{ '%s|%r|%5s|' % (undefined_var, d.missing, undefined_var) }}]"),
    ("err_percent_inf", "{% set inf = (e ~ 'inf')|float %}{{ '%d' % inf }}"),
    ("err_percent_nan", "{% set nan = (e ~ 'nan')|float %}{{ '%i' % nan }}"),
    ("err_percent_x_float", "{{ '%x' % 1.5 }}"),
    ("err_percent_o_undefined", "{{ '%o' % undefined_var }}"),
    ("err_percent_d_undefined", "{{ '%d' % undefined_var }}"),
    ("err_percent_d_str", "{{ '%d' % 'a' }}"),
    ("err_percent_f_none", "{{ '%f' % none }}"),
    ("err_percent_c_range", "{{ '%c' % 1114112 }}"),
    ("err_percent_c_negative", "{{ '%c' % -1 }}"),
    ("err_percent_c_float", "{{ '%c' % 1.5 }}"),
    ("err_percent_c_str", "{{ '%c' % 'ab' }}"),
    ("err_percent_bad_conv", "{{ '%k' % 1 }}"),
    ("err_percent_bad_conv_unicode", "{{ 'ab%é' % 1 }}"),
    ("num_int_filter", "{{ 1e18|int }} {{ -1e18|int }} {{ -0.9|int }} {{ 'nan'|float|int }} {{ 'inf'|int }} {{ 'nan'|int }} {{ '1e3'|int }} {{ '0x1A'|int(0, 0) }} {{ '0b101'|int(base=2) }} {{ '0o17'|int(base=8) }} {{ '017'|int(base=0) }} {{ '00'|int(base=0) }} {{ '1__0'|int }} {{ '_1'|int }} {{ '1_'|int }} {{ '0x_1f'|int(base=16) }} {{ '0x1f'|int }} {{ 'z'|int(base=36) }} {{ none|int }} {{ '12'|int(base=1) }} {{ '12'|int(base='x') }} {{ ' -1_000 '|int }} {{ '9223372036854775807'|int }} {{ '-9223372036854775808'|int }} {{ [1]|int(7) }} {{ '3.99'|int }} {{ '-3.99e2'|int }} {{ 5|int(base=16) }}"),
    ("err_int_filter_inf", "{{ ((e ~ 'inf')|float)|int }}"),
    ("num_float_filter", "{{ '1_0.5'|float }} {{ '1__0.5'|float }} {{ '_1'|float }} {{ '1_.5'|float }} {{ ' -Infinity '|float }} {{ 'nan'|float }} {{ '1e999'|float }} {{ '.5'|float }} {{ '5.'|float }} {{ '0x10'|float }} {{ 7|float }} {{ ('1' * 400)|float }} {{ ('0.' ~ '0' * 300 ~ '1')|float }}"),
    ("num_arith_edges", "{{ 1 // 0.1 }} {{ -1 // 0.1 }} {{ 7.5 // -2 }} {{ 1 // ((e ~ 'inf')|float) }} {{ -1 // ((e ~ 'inf')|float) }} {{ 2 ** -1 }} {{ 10 ** -400 }} {{ ((e ~ 'inf')|float) ** 2 }} {{ (-8) ** (1 / 1) }} {{ 9223372036854775807 // -1 }} {{ (-9223372036854775807 - 1) % -1 }} {{ -9223372036854775807 - 1 }} {{ 3 ** 39 }} {{ (-2) ** 63 }} {{ 0.0 ** 0 }} {{ ((e ~ 'nan')|float) ** 0 }} {{ 1e308 * 10 }} {{ 9007199254740993 / 1 }}"),
    ("err_pow_overflow", "{{ 10.0 ** 400 }}"),
    ("err_pow_int_float_overflow", "{{ 10 ** 400.0 }}"),
    ("err_pow_zero_negative", "{{ 0 ** -1 }}"),
    ("err_float_mod_zero", "{{ 1.0 % 0.0 }}"),
    ("err_float_floordiv_zero", "{{ 1.0 // 0 }}"),
    ("err_int_mod_zero", "{{ 1 % 0 }}"),
    ("err_int_floordiv_zero", "{{ 1 // 0 }}"),
    ("err_float_div_zero", "{{ 1 / 0.0 }}"),
    ("num_round_edges", "{{ 5e305|round(-306) }} {{ 1.5e-320|round(321) }} {{ 2.5|round(400) }} {{ 2.5|round(-400) }} {{ -0.4|round(-1) }} {{ 0.285|round(2) }} {{ 1.005|round(2) }} {{ 14.5|round(-1) }} {{ 15|round(-1) }} {{ 25|round(-1) }} {{ 5.4|round(-1) }} {{ 45.0000001|round(-1) }} {{ 1234.5678|round(-3) }} {{ 7|round(0, 'ceil') }} {{ 2.5|round(-2, 'ceil') }} {{ -2.5|round(1, 'floor') }} {{ 2.51|round(1, 'floor') }} {{ 5000000000000000000|round(-19) }} {{ -5000000000000000000|round(-19) }} {{ 9223372036854775807|round(-20) }} {{ 9223372036854775807|round(-18) }} {{ ((e ~ 'inf')|float)|round(2) }} {{ ((e ~ 'nan')|float)|round(-2) }}"),
    ("err_round_ceil_inf", "{{ ((e ~ 'inf')|float)|round(0, 'ceil') }}"),
    ("err_round_floor_nan", "{{ ((e ~ 'nan')|float)|round(0, 'floor') }}"),
    ("err_round_ceil_big_precision", "{{ 2.5|round(400, 'ceil') }}"),
    ("err_round_floor_small_precision", "{{ 2.5|round(-400, 'floor') }}"),
    ("err_round_method_first", "{{ 'x'|round(0, 'bad') }}"),
    ("err_round_undefined", "{{ undefined_var|round }}"),
    ("err_round_too_large", "{{ 1.7976931348623157e308|round(-308) }}"),
    ("num_range", "{{ range(0, 10, 3) }} {{ range(5, 2) }} {{ range(0, 10, 3)[1:] }} {{ range(10)[::-1] }} {{ range(0, 1, 5) }} {{ range(3) }} {{ range(-5) }} {{ range(100000)|length }} {{ range(10)[2:5][::2] }} {{ range(10)[5:1] }} {{ range(9223372036854775800, 9223372036854775807, 4) }} {{ range(9223372036854775800, 9223372036854775807, 4)|list }} {{ range(9223372036854775800, 9223372036854775807, 4)[::-1] }} {{ range(3, -1, -1)|list }} {{ range(true) }}"),
    ("err_range_too_big", "{{ range(100001) }}"),
    ("err_range_float", "{{ range(1.5) }}"),
    ("err_range_none", "{{ range(0, none) }}"),
    ("num_repeat", "{{ '' * 1000000000000 }}|{{ [] * 1000000000000 }}|{{ 'ab' * -5 }}|{{ 'ab' * false }}|{{ [1] * true }}|{{ -3 * 'x' }}|"),
    ("num_compare_exact", "{% set nan = (e ~ 'nan')|float %}{{ nan < 1 }} {{ nan <= 1 }} {{ 1 >= nan }} {{ nan > nan }} {{ nan == nan }} {{ nan != nan }} {{ [nan] < [1] }} {{ 1 is lt(nan) }} {{ nan is ge(1) }} {{ [1, nan, 0]|max }} {{ [1, nan, 0]|min }} {{ 9007199254740993 == 9007199254740992.0 }} {{ 9007199254740993 > 9007199254740992.0 }} {{ 9007199254740992.0 < 9007199254740993 }} {{ 9223372036854775807 == 9223372036854775808.0 }} {{ 9223372036854775807 < 9223372036854775808.0 }} {{ -9223372036854775807 - 1 == -9223372036854775808.0 }} {{ 2 in [2.0] }} {{ {9007199254740993: 'i'}[9007199254740992.0] is defined }} {{ {2.0: 'f'}[2] }} {{ 1.5 > 1 }} {{ -1 < -0.5 }}"),
    ("str_format_fields", "{{ '{0}{0}'.format('a') }} {{ '{00}'.format('b') }} {{ '{}-{}'.format(1, 2) }}"),
    ("err_str_format_big_index", "{{ '{4294967296}'.format('a') }}"),
    ("err_str_format_index", "{{ '{1}'.format('a') }}"),
    ("err_str_format_auto_index", "{{ '{}{}'.format('a') }}"),
    ("err_str_format_key", "{{ '{0x}'.format('a') }}"),
    ("f_tojson_indent", "{{ {'a': [1]}|tojson(indent=300)|length }} {{ [1]|tojson(indent=-1) }} {{ [1]|tojson(indent=true) }} {{ [1]|tojson(indent='\t') }}"),
    ("err_tojson_indent_float", "{{ [1]|tojson(indent=1.5) }}"),
    ("f_indent_width", "{{ 'a\nb'|indent(-2) }}|{{ 'a\nb'|indent(true) }}|{{ 'a\nb'|indent(300)|length }}"),
    ("err_indent_none_width", "{{ 'x'|indent(none) }}"),
    ("err_indent_none", "{{ none|indent }}"),
    ("err_indent_int", "{{ 3|indent }}"),
    ("err_indent_undefined", "{{ undefined_var|indent }}"),
    ("err_abs_undefined", "{{ undefined_var|abs }}"),
    # falsy, none and undefined inputs to the sequence filters: map, select, reject, selectattr
    # and rejectattr return an empty generator for any falsy input (`if value:` in Jinja)
    ("f_seq_undefined", "{{ undefined_var|select|list }} {{ undefined_var|reject('none')|list }} {{ undefined_var|selectattr('a')|list }} {{ undefined_var|rejectattr('a', 'defined')|list }} {{ undefined_var|map(attribute='a')|list }} {{ undefined_var|map('upper')|list }} {{ d.missing|selectattr('type', 'equalto', 'function')|list }} [{{ undefined_var|join(', ') }}] {{ undefined_var|length }} {{ undefined_var|count }} {{ undefined_var|list }} [{{ undefined_var|first }}] [{{ undefined_var|last }}] {{ undefined_var|sort }} {{ undefined_var|unique|list }} {{ undefined_var|items|list }} {{ undefined_var|reverse|list }} {{ undefined_var|sum }} [{{ undefined_var|min }}] [{{ undefined_var|max }}] {{ undefined_var|wordcount }} [{{ undefined_var|trim }}]"),
    ("f_seq_falsy", "{{ none|select|list }} {{ none|reject|list }} {{ none|selectattr('a')|list }} {{ none|rejectattr('a')|list }} {{ none|map(attribute='a')|list }} {{ none|map|list }} {{ none|selectattr|list }} {{ false|select|list }} {{ false|map('upper')|list }} {{ 0|selectattr('a')|list }} {{ 0.0|reject|list }} {{ ''|map('upper')|list }} {{ ''|select|list }} {{ []|rejectattr('a')|list }} {{ {}|map(attribute='a')|list }} {{ 'ab'|select|list }} {{ 'ab'|map('upper')|list }} {{ {'k': 1}|select|list }} {{ none|wordcount }} {{ none|float }} {{ none|int }} {{ false|abs }} {{ ''|reverse }}|{{ {}|dictsort }} {{ {}|items|list }}"),
    ("f_seq_tools_undefined", "{% for t in tools|selectattr('type', 'equalto', 'function') %}{{ t }}{% else %}no tools{% endfor %} {{ tools|map(attribute='function')|map(attribute='name')|join(', ') }}|{{ (tools|selectattr('type')|list|length) }}"),
    ("err_seq_none_join", "{{ none|join(', ') }}"),
    ("err_seq_none_length", "{{ none|length }}"),
    ("err_seq_false_count", "{{ false|count }}"),
    ("err_seq_none_list", "{{ none|list }}"),
    ("err_seq_none_first", "{{ none|first }}"),
    ("err_seq_none_last", "{{ none|last }}"),
    ("err_seq_none_sort", "{{ none|sort }}"),
    ("err_seq_none_unique", "{{ none|unique|list }}"),
    ("err_seq_none_items", "{{ none|items|list }}"),
    ("err_seq_none_dictsort", "{{ none|dictsort }}"),
    ("err_seq_list_dictsort", "{{ []|dictsort }}"),
    ("err_seq_undefined_dictsort", "{{ undefined_var|dictsort }}"),
    ("err_seq_none_reverse", "{{ none|reverse|list }}"),
    ("err_seq_none_sum", "{{ none|sum }}"),
    ("err_seq_none_max", "{{ none|max }}"),
    ("err_seq_true_select", "{{ true|select|list }}"),
    ("err_seq_int_map", "{{ 5|map('string')|list }}"),
    ("err_seq_true_selectattr", "{{ true|selectattr('a')|list }}"),
    ("err_seq_map_no_filter", "{{ [1]|map|list }}"),
]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
            "days": {"type": "integer", "description": "Forecast days", "default": 1,
                     "maximum": 7, "minimum": 1},
            "hourly": {"type": "boolean", "description": "Hourly data"},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "Tags"},
            "loc": {"type": "object", "description": "Coordinates", "properties": {
                "lat": {"type": "number", "description": "Latitude"},
                "lon": {"type": "number"}}, "required": ["lat"]},
        }, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web <fast> & \"safe\"",
        "parameters": {"type": "object", "properties": {
            "q": {"type": ["string", "null"], "description": "Query"},
            "n": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "digits"}]},
            "when": {"type": "string", "format": "date-time", "examples": ["2024-01-01"]},
        }, "required": ["q"]}}},
]


def tool_convs(args_as_string):
    def args(d):
        return json.dumps(d) if args_as_string else d
    return {
        "system": "You are a helpful assistant.",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": args({"city": "Paris", "days": 2})}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
             "content": "{\"temp\": 18, \"sky\": \"clear\"}"},
            {"role": "assistant", "content": "It is 18°C and clear in Paris."},
            {"role": "user", "content": "Thanks! <b>bye</b>"},
        ],
    }


def render(source, ctx):
    try:
        return {"expected": env.from_string(source).render(**ctx)}
    except Exception as exc:  # the reference's error becomes the expected one
        msg = str(exc)
        if type(exc) is jinja2.exceptions.TemplateError:
            kind = "raise"  # raise_exception()
        elif isinstance(exc, RecursionError):
            kind = "recursion"
        elif isinstance(exc, jinja2.exceptions.TemplateSyntaxError):
            kind = "syntax"
        else:
            kind = "runtime"
        out = {"error": msg, "error_kind": kind}
        if kind == "syntax":  # Spindle words syntax errors its own way ("line N: ...")
            out["error_any"] = True
        return out


def main():
    cases = []
    macros = "{% macro greet(name) %}hi {{ name }}{% endmacro %}"
    for name, src in LANG:
        if "greet is callable" in src:
            src = macros + src
        case = {"name": name, "template": src, "context": CTX}
        case.update(render(src, CTX))
        cases.append(case)
    tdir = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "templates")
    if len(sys.argv) > 1:
        tdir = sys.argv[1]
    files = sorted(f for f in os.listdir(tdir) if f.endswith(".jinja"))
    for f in files:
        source = open(os.path.join(tdir, f), encoding="utf-8").read()
        for as_string in (False, True):
            # 2: both tools; 1: the first only (Hermes recurses forever on the second's
            # "null" type, which only tests the depth limit); 0: none.
            for with_tools in (2, 1, 0):
                conv = tool_convs(as_string)
                ctx = {"messages": conv["messages"], "bos_token": "<s>", "eos_token": "</s>",
                       "add_generation_prompt": True}
                if with_tools:
                    tools = TOOLS[:with_tools]
                    ctx["tools"] = tools
                    ctx["functions"] = json.dumps(tools)  # firefunction wants these two
                    ctx["datetime"] = "2026-01-15"
                case = {"name": "%s tools=%d args_str=%d" % (f, with_tools, as_string),
                        "template_file": f, "context": ctx}
                case.update(render(source, ctx))
                cases.append(case)
    json.dump({"generator": "Jinja2 %s" % jinja2.__version__, "now_unix_s": NOW,
               "cases": cases}, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
