package org.tether

/**
 * A small JSON reader for the tests (the binding hands out JSON text and has no JSON library):
 * objects become `Map<String, Any?>`, arrays `List<Any?>`, numbers `Long` or `Double`.
 */
object TestJson {
    fun parse(s: String): Any? = Reader(s).run { value().also { ws(); check(i == s.length) { "trailing text at $i" } } }

    @Suppress("UNCHECKED_CAST")
    fun obj(s: String): Map<String, Any?> = parse(s) as Map<String, Any?>

    private class Reader(val s: String) {
        var i = 0

        fun ws() {
            while (i < s.length && s[i].isWhitespace()) i++
        }

        fun value(): Any? {
            ws()
            return when (val c = s[i]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> string()
                't' -> { i += 4; true }
                'f' -> { i += 5; false }
                'n' -> { i += 4; null }
                else -> {
                    check(c == '-' || c.isDigit()) { "unexpected '$c' at $i" }
                    val start = i
                    while (i < s.length && (s[i].isDigit() || s[i] in "+-.eE")) i++
                    val t = s.substring(start, i)
                    t.toLongOrNull() ?: t.toDouble()
                }
            }
        }

        fun obj(): Map<String, Any?> {
            i++
            val m = LinkedHashMap<String, Any?>()
            ws()
            if (s[i] == '}') { i++; return m }
            while (true) {
                ws()
                val k = string()
                ws()
                expect(':')
                m[k] = value()
                ws()
                if (s[i] == ',') { i++; continue }
                expect('}')
                return m
            }
        }

        fun arr(): List<Any?> {
            i++
            val l = ArrayList<Any?>()
            ws()
            if (s[i] == ']') { i++; return l }
            while (true) {
                l.add(value())
                ws()
                if (s[i] == ',') { i++; continue }
                expect(']')
                return l
            }
        }

        fun expect(c: Char) {
            check(s[i] == c) { "expected '$c' at $i, got '${s[i]}'" }
            i++
        }

        fun string(): String {
            expect('"')
            val out = StringBuilder()
            while (s[i] != '"') {
                val c = s[i++]
                if (c != '\\') { out.append(c); continue }
                when (val e = s[i++]) {
                    'n' -> out.append('\n')
                    't' -> out.append('\t')
                    'r' -> out.append('\r')
                    'b' -> out.append('\b')
                    'f' -> out.append('\u000c')
                    'u' -> { out.append(s.substring(i, i + 4).toInt(16).toChar()); i += 4 }
                    else -> out.append(e)
                }
            }
            i++
            return out.toString()
        }
    }
}

/** `m[k]` of a parsed object, cast. */
@Suppress("UNCHECKED_CAST")
fun <T> Any?.at(vararg path: String): T {
    var v: Any? = this
    for (k in path) v = (v as Map<String, Any?>?)?.get(k)
    return v as T
}
